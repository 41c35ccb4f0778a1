#!/usr/bin/env python3
"""Fuzz harness: ``nnar verify FILE`` through the command line's own entry point.

Entry point :func:`test_one_input`: the bytes are written to a file and
``nnar.cli.main(["verify", path, <limits>])`` runs. It must return 0 (printing one ``ok:``
line on stdout and nothing on stderr) or 1 (printing exactly one line
``nnar: error[<code>]: ...`` on stderr, with a code of the error family, and nothing on
stdout); it must never raise, nor exit another way. Like fuzz_archive.py, each input is also tried with
its CRCs recomputed.

    python fuzz/fuzz_cli_verify.py fuzz/corpus/cli_verify -max_total_time=1800
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import LIMITS, ContractViolation, quiet, with_crcs_fixed  # noqa: E402

from nnar.cli import main  # noqa: E402
from nnar.errors import all_error_classes  # noqa: E402

NAME = "cli_verify"
CODES = {cls.code for cls in all_error_classes()}
ERROR_LINE = re.compile(r"nnar: error\[([a-z-]+)\]: .+\n\Z", re.S)
#: C0 and C1 control characters: in an error line they split it or drive the terminal
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
ARGS = ["--max-tensor-bytes", str(LIMITS.max_tensor_bytes), "--max-descriptor-bytes",
        str(LIMITS.max_descriptor_bytes), "--max-tensors", str(LIMITS.max_tensors)]

_DIR = tempfile.mkdtemp(prefix="nnar-fuzz-cli-")
atexit.register(shutil.rmtree, _DIR, True)
PATH = os.path.join(_DIR, "input.nnar")


def check_verify(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    with quiet() as (out, err):
        try:
            rc = main(["verify", PATH, *ARGS])
        except BaseException as e:  # noqa: BLE001  (SystemExit included: verify has no usage errors here)
            if isinstance(e, KeyboardInterrupt):
                raise
            raise ContractViolation(f"nnar verify raised {type(e).__name__}: {e}") from e
    out, err = out.getvalue(), err.getvalue()
    if rc == 0:
        if err or not re.fullmatch(r"ok: \d+ tensors, [^\n]*\n", out):
            raise ContractViolation(f"exit 0, expected one 'ok:' line on stdout, found {out!r:.200} / {err!r:.200}")
    elif rc == 1:
        m = ERROR_LINE.match(err)
        if out or not m:
            raise ContractViolation(f"exit 1, expected one error line on stderr, found {err!r:.300} / {out!r:.100}")
        if CONTROL.search(err[:-1]):
            raise ContractViolation(f"exit 1, control character in the error line {err!r:.300}")
        if m.group(1) not in CODES:
            raise ContractViolation(f"exit 1 with an unknown error code {m.group(1)!r}")
    else:
        raise ContractViolation(f"nnar verify exited {rc!r}, expected 0 or 1")


test_one_input = with_crcs_fixed(check_verify)


if __name__ == "__main__":
    from common import fuzz_main
    fuzz_main(test_one_input)
