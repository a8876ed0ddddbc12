"""Settlement's application layer: one class per flow, built once at start-up (app.py) under typed AppKeys.

Only these open units of work; handlers, consumers and jobs parse, call one method here, and answer.
"""
from services.settlement.usecases.journal import JOURNAL, Journal
from services.settlement.usecases.payouts import PAYOUTS, Payouts
from services.settlement.usecases.reconciliations import RECONCILIATIONS, Reconciliations
from services.settlement.usecases.rules import SPLIT_RULES, SplitRules
from services.settlement.usecases.statements import STATEMENTS, Statements

__all__ = ["JOURNAL", "PAYOUTS", "RECONCILIATIONS", "SPLIT_RULES", "STATEMENTS", "Journal", "Payouts",
           "Reconciliations", "SplitRules", "Statements"]
