"""Sandboxed rendering of templates, webhook signatures and webhook targets."""
from __future__ import annotations

import pytest

from services.notifications.domain.signing import sign, verify
from services.notifications.domain.targets import private_target
from services.notifications.domain.templates import TemplateProblem, check, context_for, default_for, render, yuan


def ctx(data, locale="zh-CN"):
    return context_for("orders.order.ready_for_pickup", "evt_1", "2026-03-02T04:00:00Z", data, "Lin", locale)


def test_pickup_template_carries_the_code_in_each_locale():
    data = {"order_id": "ord_1", "pickup_code": "483920", "store_name": "Jing'an"}
    zh = render(*default_for("orders.order.ready_for_pickup", "sms", "zh-CN"), ctx(data))
    en = render(*default_for("orders.order.ready_for_pickup", "sms", "en"), ctx(data, "en"))
    assert "483920" in zh.body and "取货码" in zh.body
    assert "483920" in en.body and "Pickup code" in en.body


def test_money_is_rendered_from_fen():
    assert yuan(12345) == "¥123.45" and yuan(5) == "¥0.05" and yuan(-100) == "-¥1.00" and yuan("x") == "x"
    rendered = render("", "{{ totals.total | yuan }}", ctx({"totals": {"total": 9900}}))
    assert rendered.body == "¥99.00"


def test_missing_fields_render_empty_instead_of_failing():
    assert render("{{ nope }}", "a{{ missing.deeper if missing is defined else '' }}b", ctx({})).body == "ab"


@pytest.mark.parametrize("evil", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ recipient.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ data.items.__self__.__class__ }}",
])
def test_the_sandbox_refuses_python_internals(evil):
    # The sandbox either refuses outright or yields an undefined value: nothing of Python's internals leaks.
    try:
        rendered = render("", evil, ctx({}))
    except TemplateProblem as problem:
        assert "SecurityError" in str(problem) or "undefined" in str(problem).lower()
    else:
        assert rendered.body == ""


def test_broken_syntax_is_rejected_before_storing():
    with pytest.raises(TemplateProblem):
        check("ok", "{% if %}")
    with pytest.raises(TemplateProblem):
        check("x" * 5000, "ok")
    check("Hello {{ recipient.name }}", "{% if pickup_code %}{{ pickup_code }}{% endif %}")


def test_event_data_cannot_shadow_the_template_names():
    rendered = render("", "{{ recipient.name }}/{{ event.type }}", ctx({"recipient": "x", "event": "y"}))
    assert rendered.body == "Lin/orders.order.ready_for_pickup"


def test_signature_verifies_and_rejects_tampering_replay_and_wrong_secret():
    body = b'{"id":"evt_1"}'
    header = sign("s3cret-s3cret-s3cret", body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify("s3cret-s3cret-s3cret", header, body, now=1_700_000_100)
    assert not verify("s3cret-s3cret-s3cret", header, body + b" ", now=1_700_000_100)
    assert not verify("other-secret-other", header, body, now=1_700_000_100)
    assert not verify("s3cret-s3cret-s3cret", header, body, now=1_700_000_000 + 301)
    assert not verify("s3cret-s3cret-s3cret", None, body)
    assert not verify("s3cret-s3cret-s3cret", "t=abc,v1=00", body)
    assert not verify("s3cret-s3cret-s3cret", "v1=00", body)


def test_signature_accepts_any_of_several_v1_values_during_rotation():
    body = b"{}"
    good = sign("new-secret-new-secret", body, 100).split("v1=")[1]
    assert verify("new-secret-new-secret", f"t=100,v1=deadbeef,v1={good}", body, now=100)


@pytest.mark.parametrize("url, refused", [
    ("https://hooks.partner.example/o2o", False),
    ("http://8.8.8.8/hook", False),
    ("http://203.0.113.10/hook", True),  # documentation range: not routable on the internet
    ("http://127.0.0.1:8084/members/internal/members", True),
    ("http://localhost/x", True),
    ("http://169.254.169.254/latest/meta-data", True),
    ("http://10.1.2.3/x", True),
    ("http://[::1]/x", True),
    ("http://membership/x", True),
    ("http://membership.o2o.svc.cluster.local/x", True),
])
def test_webhook_targets_inside_our_network_are_refused(url, refused):
    assert (private_target(url) is not None) is refused


def test_the_pickup_message_says_until_when_to_collect_in_local_time():
    data = {"order_id": "ord_1", "pickup_code": "123456", "collect_by": "2026-03-05T13:30:00Z"}
    zh = render(*default_for("orders.order.ready_for_pickup", "sms", "zh-CN"), ctx(data))
    en = render(*default_for("orders.order.ready_for_pickup", "sms", "en"), ctx(data, "en"))
    assert "3月5日 21:30 前" in zh.body  # 13:30 UTC is 21:30 in Shanghai
    assert "collect it by 5 Mar 21:30" in en.body
    without = render(*default_for("orders.order.ready_for_pickup", "sms", "en"), ctx({"order_id": "ord_1",
                                                                                       "pickup_code": "1"}, "en"))
    assert "collect it by" not in without.body
