"""Code grading: extract a program from a model's answer, run it against tests in the sandbox.

Two kinds of sample are understood (field `tests`, or `test` as in the HumanEval files):

* **HumanEval / EvalPlus**: `tests` is Python source defining ``check(candidate)``, and
  `entry_point` names the function under test. A completion that does not define `entry_point`
  is taken as a continuation of the sample's `prompt` (the HumanEval convention) and appended
  to it; a completion that does is placed after the prompt (when the prompt is Python), so the
  prompt's imports and helper functions stay available. A test program that calls ``check``
  itself (DeepSeek-Coder's LeetCode files: ``check(Solution().twoSum)``) needs no `entry_point`.
* **LeetCode / LiveCodeBench**: `tests` is a list of ``{"input": str, "output": str}`` cases
  (or a JSON string of one, or ``{"inputs": [...], "outputs": [...]}``). Without `fn_name` each
  case feeds `input` on stdin and compares stdout with `output` (whitespace-normalised, numbers
  compared by value); one sandbox run holds a harness that starts the program afresh for each
  case and stops at the first failure. With `fn_name` (in the sample or the tests dict) the cases are call-based:
  each line of `input` is a JSON argument of ``Solution().fn_name`` (or a top-level function of
  that name), and `output` is the JSON of the expected return value.

Every program runs through `leaf.evaluate.sandbox.run_python`; nothing here executes it in-process.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import json
import math
import re
import secrets
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from leaf.data.schema import calls_check
from leaf.evaluate.sandbox import Limits, SandboxResult, run_python

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PY_TAGS = {"python", "py", "python3", "py3"}
DEFAULT_TIMEOUT = 10.0  # seconds per program run (per test case for stdin/stdout tests)


@dataclass(frozen=True)
class CodeResult:
    """`status`: "passed", "failed" (a test failed), "error" (crash, syntax error, exited early,
    killed by a limit) or "timeout". `detail` says why, briefly (the end of stderr)."""

    passed: bool
    status: str
    detail: str


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The program in a model's answer: a fenced ```python block if there is one, else the text.

    Among several python blocks (or untagged blocks when none is tagged), the first that defines
    `entry_point` wins when given, else the longest. A fence left open by a truncated generation
    runs to the end of the text.
    """
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(text)]
    chosen = [b for t, b in blocks if t in _PY_TAGS] or [b for t, b in blocks if not t]
    if not chosen:
        return text
    if entry_point:
        for body in chosen:
            if _defines(body, entry_point):
                return body
    return max(chosen, key=len)


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def _defines(program: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", program, re.M) is not None


def run_tests(program: str, sample: dict, timeout: float = DEFAULT_TIMEOUT,
              limits: Limits | None = None) -> CodeResult:
    """Run `program` against the tests of `sample` in the sandbox. See the module docstring."""
    limits = limits or Limits()
    tests = sample.get("tests", sample.get("test"))
    if isinstance(tests, str) and tests.lstrip()[:1] in ("[", "{"):
        with contextlib.suppress(json.JSONDecodeError):
            tests = json.loads(tests)
    if isinstance(tests, str):
        return _run_check_function(program, sample, tests, timeout, limits)
    fn_name = sample.get("fn_name")
    if isinstance(tests, dict):
        fn_name = fn_name or tests.get("fn_name")
        tests = [{"input": i, "output": o}
                 for i, o in zip(tests.get("inputs", []), tests.get("outputs", []))]
    if not isinstance(tests, list) or not tests:
        raise ValueError(f"sample {sample.get('id')!r} has no usable `tests`")
    if fn_name:
        return _run_call_based(program, tests, fn_name, timeout, limits)
    return _run_stdio(program, tests, timeout, limits)


def run_tests_parallel(items: Iterable[tuple[str, dict]], timeout: float = DEFAULT_TIMEOUT,
                       workers: int = 2) -> list[CodeResult]:
    """`run_tests` over (program, sample) pairs with a small thread pool; results in order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda it: run_tests(it[0], it[1], timeout), items))


# ----------------------------------------------------------------- HumanEval / EvalPlus style

def _run_check_function(program: str, sample: dict, tests: str, timeout: float,
                        limits: Limits) -> CodeResult:
    entry = sample.get("entry_point")
    if not entry and not calls_check(tests):
        raise ValueError(f"sample {sample.get('id')!r}: a `check` test program needs `entry_point`")
    prompt = sample.get("prompt") or ""
    if prompt and entry and not _defines(program, entry):
        program = prompt + program  # a body continuing the prompt's signature
    elif prompt and _parses(prompt):
        # A full function: keep the prompt's imports and helpers (typing.List, encode_cyclic
        # ...); the completion's definition comes later and replaces the prompt's stub.
        program = prompt + "\n\n" + program
    nonce = secrets.token_hex(16)  # the tests ran to the end only if this is printed
    call = f"check({entry})\n" if entry else ""  # else the tests call check themselves
    source = f"{program}\n\n{tests}\n\n{call}print({nonce!r})\n"
    res = run_python(source, limits=limits, timeout=timeout)
    if res.ok and res.stdout.rstrip().endswith(nonce):
        return CodeResult(True, "passed", "")
    return _failure(res, "AssertionError")


def _failure(res: SandboxResult, failed_marker: str) -> CodeResult:
    tail = res.stderr.strip()[-1500:]
    if res.status == "timeout":
        return CodeResult(False, "timeout", f"wall-clock limit hit after {res.wall_time:.1f}s")
    if res.status == "output_limit":
        return CodeResult(False, "error", "output limit exceeded")
    if res.status == "signal":
        return CodeResult(False, "error", f"killed by signal {res.signal}. {tail}".strip())
    last = tail.splitlines()[-1] if tail else ""
    if res.ok:
        return CodeResult(False, "error", "program exited before the tests finished")
    if last.startswith(failed_marker):
        return CodeResult(False, "failed", tail)
    return CodeResult(False, "error", tail or f"exit code {res.returncode}")


# ----------------------------------------------------------------- LeetCode / LiveCodeBench

_STDIO_HARNESS = """
import json, subprocess, sys
from decimal import Decimal, InvalidOperation
import math

{match_src}

with open("solution.py", "w") as f:
    f.write({program!r})
results = []
for case in json.loads({cases!r}):
    try:
        run = subprocess.run([sys.executable, "-I", "-B", "solution.py"], capture_output=True,
                             input=case["input"].encode(), timeout={timeout})
    except subprocess.TimeoutExpired:
        results.append({{"status": "timeout"}})
        break
    out = run.stdout.decode("utf-8", "replace")
    ok = run.returncode == 0 and outputs_match(out, case["output"])
    results.append({{"status": "passed" if ok else "failed" if run.returncode == 0 else "error",
                     "stdout": out[:300], "stderr": run.stderr.decode("utf-8", "replace")[-1000:],
                     "returncode": run.returncode}})
    if not ok:
        break
print({nonce!r} + json.dumps(results))
"""


def _run_stdio(program: str, cases: list[dict], timeout: float, limits: Limits) -> CodeResult:
    """All cases in one sandbox run: a harness inside it runs the program once per case (a
    fresh process each time, `timeout` seconds each) and stops at the first failing case."""
    nonce = secrets.token_hex(16)
    harness = _STDIO_HARNESS.format(
        match_src=inspect.getsource(outputs_match) + "\n" + inspect.getsource(_same_number),
        program=program, cases=json.dumps(cases), timeout=float(timeout), nonce=nonce)
    res = run_python(harness, limits=limits, timeout=timeout * len(cases) + 5)
    line = next((ln for ln in reversed(res.stdout.splitlines()) if ln.startswith(nonce)), None)
    if line is None:
        return _failure(res, "\0") if not res.ok else CodeResult(False, "error", res.stderr[-1500:])
    results = json.loads(line[len(nonce):])
    if len(results) == len(cases) and all(r["status"] == "passed" for r in results):
        return CodeResult(True, "passed", f"{len(cases)} cases")
    i, last = len(results) - 1, results[-1]
    if last["status"] == "timeout":
        return CodeResult(False, "timeout", f"case {i}: over {timeout:g}s")
    if last["status"] == "error":
        return CodeResult(False, "error", f"case {i}: exit code {last['returncode']}. "
                                          f"{last['stderr'].strip()}")
    return CodeResult(False, "failed", f"case {i}: expected {cases[i]['output'][:200]!r}, "
                                       f"got {last['stdout'][:200]!r}")


_CALL_HARNESS = """

def _leaf_run_cases():
    import json, signal
    cases = json.loads({cases!r})
    target = globals().get("Solution")
    fn = getattr(target(), {fn!r}) if target is not None else globals()[{fn!r}]
    def _alarm(*_):
        raise TimeoutError("test case timed out")
    signal.signal(signal.SIGALRM, _alarm)
    for i, case in enumerate(cases):
        args = [json.loads(line) for line in case["input"].split("\\n") if line.strip()]
        expected = json.loads(case["output"])
        signal.alarm({alarm})
        got = fn(*args)
        signal.alarm(0)
        got = json.loads(json.dumps(got))  # tuples -> lists, as in the expected JSON
        if got != expected:
            raise AssertionError(f"case {{i}}: expected {{expected!r:.200}}, got {{got!r:.200}}")

_leaf_run_cases()
print({nonce!r})
"""


def _run_call_based(program: str, cases: list[dict], fn_name: str, timeout: float,
                    limits: Limits) -> CodeResult:
    nonce = secrets.token_hex(16)
    harness = _CALL_HARNESS.format(cases=json.dumps(cases), fn=fn_name, nonce=nonce,
                                   alarm=max(1, math.ceil(timeout)))
    res = run_python(program + harness, limits=limits, timeout=timeout * len(cases) + 1)
    if res.ok and res.stdout.rstrip().endswith(nonce):
        return CodeResult(True, "passed", f"{len(cases)} cases")
    result = _failure(res, "AssertionError")
    if result.detail.endswith("TimeoutError: test case timed out"):
        return CodeResult(False, "timeout", f"a case took over {timeout:g}s")
    return result


def outputs_match(got: str, expected: str) -> bool:
    """Stdout comparison: tokens equal after whitespace normalisation; numeric tokens equal by
    value ("1.0" == "1"), or within 1e-6 when both are decimals (floating-point answers)."""
    g, e = got.split(), expected.split()
    if g == e:
        return True
    return len(g) == len(e) and all(a == b or _same_number(a, b) for a, b in zip(g, e))


def _same_number(a: str, b: str) -> bool:
    try:
        x, y = Decimal(a), Decimal(b)
    except InvalidOperation:
        return False
    if not (x.is_finite() and y.is_finite()):
        return False
    if x == y:
        return True
    return "." in a and "." in b and math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-6)


# ----------------------------------------------------------------- pass@k

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): ``1 - C(n-c, k) / C(n, k)`` for n samples of which c
    pass, computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` to stay exact-ish for large n."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
