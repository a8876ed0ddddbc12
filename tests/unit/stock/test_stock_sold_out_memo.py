"""The sold-out memo refuses only while fresh, forgets on give-back (a refresh begun before it drops its
answer), and its gate lets ONE request refresh an expired entry while the others wait (fakes, no I/O)."""
import asyncio

from services.stock.domain.model import EXPIRED, FRESH, UNKNOWN, SoldOutMemo
from services.stock.usecases.holding import SoldOutGate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_is_fresh_then_expired_and_forgotten_on_give_back():
    clock = Clock()
    memo = SoldOutMemo(1.0, clock)
    key = ("sku_a", "pickup", "loc_1")
    assert memo.state(key) == UNKNOWN
    memo.mark(["sku_a"], "pickup", "loc_1", nearest=[{"location_id": "loc_2", "distance_m": 10}])
    assert memo.state(key) == FRESH and memo.nearest(key)[0]["location_id"] == "loc_2"
    assert not memo.any_sold_out(["sku_a"], "pickup")  # the store's entry is not the "everywhere" entry
    clock.now += 2
    assert memo.state(key) == EXPIRED
    memo.forget("sku_a")
    assert memo.state(key) == UNKNOWN


def test_a_refresh_that_began_before_stock_was_given_back_does_not_mark():
    memo = SoldOutMemo(1.0, Clock())
    generation = {"sku_a": memo.generation("sku_a")}
    memo.forget("sku_a")  # a release landed while the refresh was reading
    memo.mark(["sku_a"], "ship", generation=generation)
    assert memo.state(("sku_a", "ship", None)) == UNKNOWN


async def test_one_request_refreshes_an_expired_entry_and_the_others_wait_for_its_answer():
    clock = Clock()
    memo = SoldOutMemo(1.0, clock)
    key = ("sku_a", "pickup", "loc_1")
    memo.mark(["sku_a"], "pickup", "loc_1")
    gate = SoldOutGate(memo)
    assert await gate.sold_out(key, None)  # fresh: refused without a read
    clock.now += 5
    reads = []
    release = asyncio.Event()

    async def refresh() -> bool:
        reads.append(1)
        await release.wait()
        memo.mark(["sku_a"], "pickup", "loc_1")
        return True

    waiting = [asyncio.create_task(gate.sold_out(key, refresh)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [True] * 20
    assert len(reads) == 1


async def test_a_failed_refresh_never_refuses():
    memo = SoldOutMemo(1.0, Clock())
    gate = SoldOutGate(memo)

    async def broken() -> bool:
        raise RuntimeError("database away")

    assert await gate.refresh(("sku_a", "ship", None), broken) is False


async def test_an_unknown_key_goes_to_the_database_without_a_read():
    gate = SoldOutGate(SoldOutMemo(1.0, Clock()))
    assert await gate.sold_out(("sku_a", "ship", None), None) is False
