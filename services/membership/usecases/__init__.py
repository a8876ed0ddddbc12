"""The application layer of membership: one class per flow, each public method one unit of work.

Built once at start-up (`app.py`) and kept under the typed app keys below. HTTP handlers, the bus consumers
and the periodic jobs call the same methods; a consumer's call joins the inbox's unit of work.

- members: `Members` (registration, profile, identities, search, audiences, dormancy), `Scans` (QR scans and
  attribution), `QrCodes`, `Merges`
- auth: `Keys` (signing keys, JWKS), `Tokens` (access and refresh tokens, service tokens), `Codes` (one-time
  codes and member login), `StaffAccounts` (staff logins and accounts)
- loyalty: `Points` (ledger), `Tiers`, `Purchases` (what orders' events do), `Analytics`
- coupons: `Coupons` (templates, campaigns, wallet, expiry), `CheckoutHolds` (orders' checkout contract)
"""
from services.membership.usecases.auth import CODES, KEYS, STAFF, TOKENS, Codes, Keys, StaffAccounts, Tokens
from services.membership.usecases.coupons import CHECKOUT_HOLDS, COUPONS, CheckoutHolds, Coupons, template_doc
from services.membership.usecases.loyalty import (ANALYTICS, POINTS, PURCHASES, TIERS, Analytics, Points, Purchases,
                                                  Tiers)
from services.membership.usecases.members import (MEMBERS, MERGES, QR_CODES, SCANS, Members, Merges, QrCodes,
                                                  Scans)

__all__ = ["ANALYTICS", "CHECKOUT_HOLDS", "CODES", "COUPONS", "KEYS", "MEMBERS", "MERGES", "POINTS", "PURCHASES",
           "QR_CODES", "SCANS", "STAFF", "TIERS", "TOKENS", "Analytics", "CheckoutHolds", "Codes", "Coupons", "Keys",
           "Members", "Merges", "Points", "Purchases", "QrCodes", "Scans", "StaffAccounts", "Tiers", "Tokens",
           "template_doc"]
