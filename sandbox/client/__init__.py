"""The Python client: connect, browse the catalogue, submit jobs, read released results."""

from sandbox.client._client import TLS, Client, Job, PreparedJob
from sandbox.client._query import Query
from sandbox.client._result import Result
from sandbox.client._sql import sql_to_spec

__all__ = ["TLS", "Client", "Job", "PreparedJob", "Query", "Result", "sql_to_spec"]
