"""Run jobs on a Ray cluster: submit, follow, stop; a local cluster; storage rules.

Everything here talks to a cluster through Ray's public Jobs SDK
(``JobSubmissionClient``) and the ``ray start`` command. Problems a user can fix
(unreachable cluster, unknown job id, a job folder too big to upload, node-local
storage for a multi-node run) are raised as :class:`ClusterError`: one line,
exit code 2, no traceback.
"""
from __future__ import annotations


class ClusterError(RuntimeError):
    """A cluster problem the user can fix. The CLI prints it on one line and exits with code 2."""
