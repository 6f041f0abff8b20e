"""Services: FastAPI apps that expose Atoll parties over HTTPS.

Why: a party's node, the covert-query provider and the secure island are
long-running processes that another party calls over the network. Each
module here builds one FastAPI app with a ``create_app(...)`` factory (so
tests drive it in-process); :mod:`atoll.service.server` runs any of them
under uvicorn with mutual TLS. Nothing here holds protocol logic -- the
apps drive sans-IO machines from :mod:`atoll.protocols` and sessions from
:mod:`atoll.matching`.

* :mod:`atoll.service.server` -- ``serve_app(app, host, port, tls)`` and
  :class:`~atoll.service.server.AppServer` (mutual TLS, port 0, stop);
* :mod:`atoll.service.node` -- a party node serving bucketed two-party
  sessions (``atoll psi serve``);
* :mod:`atoll.service.covert` -- the covert-query provider.
"""
