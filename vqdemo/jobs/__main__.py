"""`python -m vqdemo.jobs FD`: a local backend's worker process, talking over the socket with descriptor FD."""

from vqdemo import runtime

runtime.configure()   # before anything below can import torch: the OpenMP wait policy and malloc hold only then

import sys  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402

from .local import Channel  # noqa: E402
from .worker import serve  # noqa: E402

if __name__ == "__main__":
    serve(Channel(Connection(int(sys.argv[1]))))
