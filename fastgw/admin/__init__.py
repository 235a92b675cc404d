"""The admin API: health probes, config and runtime views, reload and drain.

Where it is served, and why
    The master binds the admin listener with the public ones, and every
    worker accepts on it with its own small HTTP handler (server.py, on
    httptools, a separate protocol class: nothing of it runs on the request
    path). The alternative, an event loop in the master, would give up the
    master's signal-only design (fork from inside a running loop, a second
    place where things can hang) for no gain: the figures the admin API
    shows live in the workers anyway. Served by the workers:

    - an answer proves that a worker's event loop runs, which is what a
      liveness probe should test;
    - cross-worker data comes from the status board (fastgw/server/board.py),
      shared memory where each worker publishes its clusters' state once a
      second and where the master records draining and reload results, so
      any worker can answer for all of them;
    - control actions are signals to the master (`os.getppid()`): SIGHUP for
      POST /reload (the worker then waits on the board for the result),
      SIGTERM for POST /drain; PUT/PATCH /config (changes.py) validate the
      new document in the worker, leave it for the master (control.py) and
      send the same SIGHUP;
    - across a reload the listener is kept open like the public ones: the
      old generation stops accepting on it, the new one takes over.

Endpoints (openapi.json documents them; a test keeps the two in step):
    GET  /livez /readyz /health    open: probes and load balancers can't always send a token
    GET  /config /routes /clusters /openapi.json /audit, POST /reload /drain,
    PUT  /config, PATCH /config/routes/{name} /config/clusters/{name}
                                   bearer token when one is configured (config
                                   changes without one: admin.allow_anonymous_changes)
"""
