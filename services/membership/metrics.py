"""Business metrics of membership (bounded labels only: kinds and outcomes, never ids)."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

TOKENS_ISSUED = Counter("o2o_membership_tokens_issued_total", "Access tokens issued", ["kind"])  # member|staff|service
LOGIN_FAILURES = Counter("o2o_membership_login_failures_total", "Refused logins", ["kind", "reason"])
OTP_REQUESTS = Counter("o2o_membership_otp_requests_total", "One-time code requests", ["outcome"])  # sent|rate_limited
MEMBERS_REGISTERED = Counter("o2o_membership_members_registered_total", "Members registered", ["source"])
MEMBERS_MERGED = Counter("o2o_membership_members_merged_total", "Members merged into another")
SCANS = Counter("o2o_membership_qr_scans_total", "QR code scans", ["qr_kind", "outcome"])  # bound|tagged
POINTS = Counter("o2o_membership_points_total", "Points moved through the ledger", ["reason"])
# Clawed-back points the spendable balance did not cover: sitting in unpaid orders' holds, or left as a debt.
CLAWBACK_UNCOVERED = Counter("o2o_membership_points_clawback_uncovered_total",
                             "Clawed-back points not covered by the balance", ["source"])  # holds | debt
COUPONS = Counter("o2o_membership_coupons_total", "Coupon lifecycle transitions", ["transition"])
# outcome: held | committed | released | expired | refused-after-release, or the code of another refusal
HOLDS = Counter("o2o_membership_checkout_holds_total", "Checkout holds by outcome", ["outcome"])
HOLD_DISCOUNT = Histogram("o2o_membership_checkout_discount_fen", "Discount granted per checkout hold (fen)",
                          buckets=(0, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000))
TIER_CHANGES = Counter("o2o_membership_tier_changes_total", "Tier changes", ["to_tier"])
DORMANT = Counter("o2o_membership_members_dormant_total", "Members marked dormant")
STAFF_IDENTITY_SCANS = Counter("o2o_membership_staff_identity_scans_total",
                               "Scans in which staff named a shopper's channel identity",
                               ["outcome"])  # registered | known | limited
IDENTITY_CLAIMS = Counter("o2o_membership_identity_claims_total",
                          "Identities staff had named for another member, claimed by the member who linked them")
SCAN_TOKENS = Counter("o2o_membership_scan_tokens_total", "Scan tokens issued and named at checkout",
                      ["outcome"])  # issued | honoured | refused
