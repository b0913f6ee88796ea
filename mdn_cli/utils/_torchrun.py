"""torchrun for `--nproc`, without its report of a failed process: each process already said what went wrong.

``python -m mdn_cli.utils._torchrun ARGS`` takes torchrun's arguments and exits with the first
failed process's exit code (2 for an input error, 130 or 143 when interrupted).
"""

import logging
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run

if __name__ == "__main__":
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
    try:
        run(parse_args(sys.argv[1:]))
    except ChildFailedError as exc:
        codes = [failure.exitcode for _, failure in sorted(exc.failures.items())]
        # the process that failed first says why (2: input error); those it left behind exit 1 (utils.distributed.peer_failed)
        sys.exit(next((code for code in codes if code > 1), None) or next((code for code in codes if code > 0), 128 - min(codes)))
