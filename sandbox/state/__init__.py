"""State store (SQLite): principals, projects, catalogue, jobs, ledger."""

from sandbox.state._at_rest import AtRestKeys, result_context
from sandbox.state._budget import BudgetLimits, BudgetSpent, PrivacyLedger
from sandbox.state._catalogue import Catalogue, DatasetRecord
from sandbox.state._db import Database
from sandbox.state._jobs import Jobs
from sandbox.state._ledger import Ledger, Shortfall
from sandbox.state._principals import Peer, Principals, hash_token, normalise_subject
from sandbox.state._projects import Projects
from sandbox.state._releases import ReleaseRegister
from sandbox.state._reviews import Hold, Reviews

__all__ = [
    "AtRestKeys",
    "BudgetLimits",
    "BudgetSpent",
    "Catalogue",
    "Database",
    "DatasetRecord",
    "Hold",
    "Jobs",
    "Ledger",
    "Peer",
    "Principals",
    "PrivacyLedger",
    "Projects",
    "ReleaseRegister",
    "Reviews",
    "Shortfall",
    "hash_token",
    "normalise_subject",
    "result_context",
]
