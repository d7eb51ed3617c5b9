"""`kuda loadtest`: many sockets and REST calls against running Kuda instances.

Install with the `loadtest` extra (`pip install 'kuda[loadtest]'`); the server does not need it.
"""
