"""`kt-launch convert`: convert model.path's routed experts (and a raw expert LoRA) to kt.method's CPU format with
kt-kernel's own quantizer, in the target interpreter; refuse what is unsafe before writing, re-check the plan after."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from kt_launch.commands.common import EXIT_OK, EXIT_PLAN
from kt_launch.commands.kernel import document_head, refused, server_env, target_python
from kt_launch.core.errors import ConfigError, Stopped
from kt_launch.core.findings import error
from kt_launch.render.text import findings_text


def run(args, passthrough) -> int:
    """Plan, refuse what is unsafe before writing, convert in the target interpreter, then re-check the plan."""
    from kt_launch.app import Request, plan_request
    from kt_launch.backend import convert as cv

    sets = list(args.sets) + ([f"kt.weight_path={os.path.abspath(args.out)}"] if args.out else [])
    out = plan_request(Request(profile=args.profile, sets=tuple(sets), checks=True, passthrough=tuple(passthrough),
                               sglang_parser=False))  # no SGLang starts: its parser is not read
    get = out.plan.get
    lp = cv.lora_plan(get, args.lora_out)
    method = args.method or cv.target_method(get)  # --method: the format to write, else the plan's
    experts = method in cv.METHODS
    if experts and not get("kt.weight_path"):
        raise ConfigError(f"{args.profile}: give --out DIR or set kt.weight_path: where the converted weights go")
    refusals = [f for f in out.findings if f.stops("convert")]
    if out.model is None:
        refusals.append(error("KT-E410", f"the model shape is unknown: {out.model_problem or 'model.path not read'}",
                              "point model.path at a HuggingFace model dir (its config.json gives the layer shape)"))
    avail = getattr(out.host, "memory_available_bytes", None) if out.host is not None else None
    cp = None if refusals else cv.fit_processes(cv.plan_conversion(
        get, out.model, os.path.abspath(str(get("kt.weight_path") or ".")), method=args.method), avail)
    if cp is not None and not experts and lp is None:
        refusals.append(cv.method_refusal(cp))
    python = target_python(args, out)
    prepared = cv.prepare(cp, python, server_env(out), avail) if experts and not refusals else None
    refusals = refusals or ((prepared.findings if prepared else []) + (cv.lora_refusals(lp) if lp else []))
    if refusals:
        return refused(args, refusals)
    answers, bad = {}, None
    lock = OutputLock()
    try:
        held = lock.take(([cp.out] if experts else []) + ([lp.out] if lp is not None else []))
        if held is not None:
            return refused(args, [held])
        if experts:
            from kt_launch.facts.host import seconds_since_start

            before = seconds_since_start()
            print(cv.start_line(cp, python), file=sys.stderr, flush=True)
            show = cv.Progress(sys.stderr, tty=sys.stderr.isatty() and not args.json)
            try:
                r = cv.run_conversion(cp, python, env=server_env(out), prepared=prepared, progress=show,
                                      pass_fds=lock.fds)
            finally:
                show.close()
            answers["experts"], bad = r.answer or {}, cv.failure(cp, r)
            answers["launcher"] = {"before_worker": before, "worker": r.seconds, "since_start": seconds_since_start()}
        if lp is not None and bad is None and not cv.lora_done(lp):
            print(f"converting the expert LoRA {lp.source} into {lp.out} with kt-kernel's converter ...",
                  file=sys.stderr, flush=True)
            r = cv.run_lora(lp, python, env=server_env(out), pass_fds=lock.fds)
            answers["lora"], bad = (r.answer or {}).get("lora") or {}, cv.failure(cp, r)
    except (KeyboardInterrupt, Stopped) as e:  # the worker's group is gone by now (facts/worker.py)
        why = f"stopped by {e.name}" if isinstance(e, Stopped) else "interrupted"
        print(f"kt-launch: {why}; finished layers are recorded in {cp.out}/{cv.MANIFEST} and the same command "
              "resumes", file=sys.stderr)
        return e.exit_code if isinstance(e, Stopped) else 130
    finally:
        lock.release()
    return _convert_report(args, passthrough, sets, cp if experts else None, lp, answers, bad, out)


class OutputLock:
    """An exclusive flock on each output dir of a convert, for the whole run (issue 23): a second convert into it
    is refused (KT-E551) while a first one, or its worker, writes there. The worker inherits the descriptor
    (pass_fds), so the lock lasts as long as either process. A dir made here only to be locked is removed again
    if the run leaves it empty (a refused conversion writes nothing)."""

    def __init__(self) -> None:
        self.fds: tuple[int, ...] = ()
        self._made: list[str] = []

    def take(self, dirs: list[str]) -> Any:
        import fcntl

        for d in dirs:
            try:
                if not os.path.isdir(d):
                    os.makedirs(d)
                    self._made.append(d)
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue  # not a dir we can open: the worker says why it cannot write there
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return error("KT-E551", f"{d} is being written by another kt-launch convert (its worker holds the "
                             "directory's lock)", "wait for that run to finish, or stop it; then run the same "
                             "command again (it resumes from the finished layers)")
            except OSError as e:  # a file system without flock: go on, and say that nothing guards the dir
                print(f"kt-launch: warning: cannot lock {d} ({e.strerror or e}): a second convert into it at the "
                      "same time would not be refused", file=sys.stderr)
                os.close(fd)
                continue
            self.fds += (fd,)
        return None

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = ()
        for d in self._made:
            try:
                os.rmdir(d)  # only when still empty
            except OSError:
                pass


def _convert_report(args, passthrough, sets, cp, lp, answers, bad, out) -> int:
    """Re-plan with the outputs (the weight and adapter checks must pass), then print the summary or the failure."""
    from kt_launch.app import Request, plan_request
    from kt_launch.backend import convert as cv

    use = ([f"kt.weight_path={cp.out}"] if cp else []) + ([f"moe_lora.path={lp.out}"] if lp else [])
    if cp is not None and getattr(args, "method", None) and not out.plan.get("moe_lora.sft_method"):
        use.append(f"kt.method={cp.method}")  # --method: the files are checked as what they are
    findings = [bad] if bad else []
    if bad is None:
        after = plan_request(Request(profile=args.profile, sets=tuple(sets + use), checks=True,
                                     passthrough=tuple(passthrough), sglang_parser=False))
        findings = [f for f in after.findings if f.level == "error" and f.code in cv.OUTPUT_CHECKS]
    if args.json:
        doc = cv.summary_json(cp, answers.get("experts") or {}, lp, answers.get("lora"))
        doc["launcher_s"] = _launcher_seconds(answers.get("launcher"))
        print(json.dumps({**document_head(findings), **doc, "findings": [f.to_json() for f in findings]}, indent=2))
    else:
        if bad is None:
            print(cv.summary_text(cp, answers.get("experts") or {}, out.plan.get, lp, answers.get("lora")))
        if findings:
            sys.stdout.write(findings_text(findings))
    return EXIT_PLAN if findings else EXIT_OK


def _launcher_seconds(t: dict | None) -> dict | None:
    """The launcher's own seconds around the worker (`launcher_s`): from its process start to the worker's (the
    interpreter, the imports, the plan and every check before writing) and from the worker's end to the report (the
    plan again, with the outputs)."""
    from kt_launch.facts.host import seconds_since_start

    if not t or t.get("before_worker") is None or t.get("since_start") is None:
        return None
    now = seconds_since_start()
    return {"before_worker": round(t["before_worker"], 3), "worker": round(float(t.get("worker") or 0), 3),
            "after_worker": round((now or t["since_start"]) - t["since_start"], 3)}
