"""`python ray_probe.py HOST:PORT`: does this Ray cluster let in a client that has no token?

Run as a script (not through the vqdemo package: nothing but Ray is imported) in a process whose environment
turns token authentication off and names no token, so Ray sends none. It asks the cluster's control service (the
GCS) for the cluster's id, which every client does first. Exit status: 0 the cluster answered (it does not require
a token), 3 it refused for want of a token (as it must), 4 anything else (the message on stderr).
"""

import sys

OPEN, LOCKED, UNKNOWN = 0, 3, 4


def main(address: str) -> int:
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    try:
        GcsClient(address=address)
    except AuthenticationError:
        return LOCKED
    except Exception as e:  # noqa: BLE001 - any other answer is reported, not guessed at
        print(f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}", file=sys.stderr)
        return UNKNOWN
    return OPEN


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
