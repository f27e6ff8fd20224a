"""State store (SQLite): principals, projects, catalogue, jobs, ledger."""

from sandbox.state._budget import BudgetLimits, BudgetSpent, PrivacyLedger
from sandbox.state._catalogue import Catalogue, DatasetRecord
from sandbox.state._db import Database
from sandbox.state._jobs import Jobs
from sandbox.state._ledger import Ledger, Shortfall
from sandbox.state._principals import Principals, hash_token
from sandbox.state._projects import Projects
from sandbox.state._releases import ReleaseRegister

__all__ = [
    "BudgetLimits",
    "BudgetSpent",
    "Catalogue",
    "Database",
    "DatasetRecord",
    "Jobs",
    "Ledger",
    "Principals",
    "PrivacyLedger",
    "Projects",
    "ReleaseRegister",
    "Shortfall",
    "hash_token",
]
