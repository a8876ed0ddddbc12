"""Business metrics of stock (bounded labels: modes, outcomes, kinds and reasons are fixed sets)."""
from prometheus_client import Counter, Gauge, Histogram

RESERVATIONS = Counter("o2o_stock_reservations_total", "Reservation requests by outcome",
                       ["mode", "outcome"])  # outcome: reserved | rejected | replayed
RESERVED_UNITS = Counter("o2o_stock_reserved_units_total", "Units reserved", ["mode"])
RELEASES = Counter("o2o_stock_releases_total", "Reservations released", ["reason"])  # cancelled|expired|order_cancelled
COMMITS = Counter("o2o_stock_commits_total", "Reservations committed (goods left)")
MOVEMENTS = Counter("o2o_stock_movements_total", "Ledger movements recorded", ["kind"])
LEVEL_LOW = Counter("o2o_stock_level_low_total", "Levels that dropped under their reorder point")
ROUTING_LOCATIONS = Histogram("o2o_stock_routing_locations", "Locations one reservation was split over",
                              ["mode"], buckets=(1, 2, 3, 4, 5))
RESERVE_LATENCY = Histogram("o2o_stock_reserve_duration_seconds", "Time to route and reserve", ["mode"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
RESERVE_PATH = Counter("o2o_stock_reserve_path_total", "How reservation requests were decided",
                       ["path"])  # fast | transactional | memo
TOMBSTONES = Counter("o2o_stock_release_tombstones_total",
                     "Releases of an order that had no reservation (a tombstone refuses its late reserve)")
RESERVATION_DRIFT = Counter("o2o_stock_reservation_drift_total",
                            "Levels whose reserved count disagreed with their open reservations, repaired",
                            ["kind"])  # over_reserved | under_reserved | available
DRIFT_LEVELS = Gauge("o2o_stock_reservation_drift_levels", "Levels out of line found by the last reconciliation run")
RECONCILIATION_RUNS = Counter("o2o_stock_reconciliation_runs_total", "Reconciliation runs completed")
APPROVALS = Counter("o2o_stock_movement_approvals_total", "Clerks' movements that needed a manager, by outcome",
                    ["kind", "outcome"])  # outcome: requested | approved | rejected
MOVEMENTS_REFUSED = Counter("o2o_stock_movements_refused_total", "Movements refused by the stock rules",
                            ["code"])  # movement-too-large | reason-required | invalid-reason
