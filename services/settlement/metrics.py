"""Business metrics of settlement (bounded labels: posting kinds, party kinds, granularities, outcomes)."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

POSTINGS = Counter("o2o_settlement_postings_total", "Journal postings by kind and outcome",
                   ["kind", "outcome"])  # outcome: posted | duplicate
CREDITED_FEN = Counter("o2o_settlement_sale_share_fen_total",
                       "Fen of sale shares credited (or debited, when negative, counted apart) per party kind",
                       ["party_kind", "direction"])  # direction: credit | debit
REVERSED_FEN = Counter("o2o_settlement_reversed_fen_total", "Fen of sale shares reversed by refunds per party kind",
                       ["party_kind"])
ORDER_NET_FEN = Histogram("o2o_settlement_order_net_fen", "Net amount of settled orders in fen",
                          buckets=(1_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000))
REFUND_ANOMALIES = Counter("o2o_settlement_refund_anomalies_total",
                           "Refunds that did not match the sale: units never sold, or an amount unlike the shares",
                           ["kind"])  # kind: unmatched_units | amount_difference
# A refund before completion is a paid order cancelled: normal, counted here, not as an anomaly.
REFUNDS = Counter("o2o_settlement_refunds_total", "Refund postings by stage of the order",
                  ["stage"])  # stage: before_completion | after_completion
STATEMENTS_CLOSED = Counter("o2o_settlement_statements_closed_total", "Statements frozen", ["granularity"])
PAYOUT_BATCHES = Counter("o2o_settlement_payout_batches_total", "Payout batch transitions", ["status"])
PAYOUT_FEN = Counter("o2o_settlement_payout_fen_total", "Fen put in payout batches", ["party_kind"])
RECONCILIATIONS = Counter("o2o_settlement_reconciliations_total", "Provider files reconciled", ["outcome"])
DISCREPANCIES = Counter("o2o_settlement_reconciliation_discrepancies_total", "Discrepancies found",
                        ["kind"])  # kind: missing | extra | mismatched
