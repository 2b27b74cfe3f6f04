"""`python -m vqdemo.jobs FD`: a local backend's worker process, talking over the socket with descriptor FD."""

import sys
from multiprocessing.connection import Connection

from .local import Channel
from .worker import serve

if __name__ == "__main__":
    serve(Channel(Connection(int(sys.argv[1]))))
