"""Mock rows: synthetic rows generated from a dataset's public description, never its data.

Used by the catalogue's MockRows RPC (researchers develop jobs against them) and, in-process,
by the server to preview a job's suppression pattern. Reads no file and no measured fact.
"""

from sandbox.mock._generate import MAX_MOCK_ROWS, MockRequest, mock_rows

__all__ = ["MAX_MOCK_ROWS", "MockRequest", "mock_rows"]
