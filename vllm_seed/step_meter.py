"""StepMeter: what each engine step tells adaptive speculation (adaptive.py).

vLLM's step outputs in; out: each branch's verdict (its draft's accepted
length, or a plain step), the target's cost by step size, and the wall time
of each decode step, as plain decoding alone (no draft in flight since the
previous step ended) or as speculation with the tokens it emitted.
"""

from __future__ import annotations

from vllm_seed.adaptive import AdaptiveSpeculation


class StepMeter:
    def __init__(self, adaptive: AdaptiveSpeculation, tree=None):
        self.adaptive, self.tree = adaptive, tree
        self.num_decoding = 0  # decoding branches when this step was scheduled
        self._undrafted_since = None  # the last step's end, if no draft was in flight then
        # The step's verified chain drafts: token confidences and temperature (scheduler.py).
        self.confidence: dict[str, tuple[list[float], float]] = {}

    def verdicts(self, out, runner_out) -> None:
        """Each branch's verdict of the step that just ran."""
        index, spec = runner_out.req_id_to_index, out.scheduled_spec_decode_tokens
        for rid, num_tokens in out.num_scheduled_tokens.items():
            if rid in spec and spec[rid] and rid in index:
                sampled = runner_out.sampled_token_ids[index[rid]]
                num_drafted = len(spec[rid]) if self.tree is None else self.tree.depth_of_prefix(len(spec[rid]))
                num_accepted = max(len(sampled) - 1, 0)
                self.adaptive.stepped(rid, self.num_decoding, num_drafted, num_accepted)
                if rid in self.confidence:
                    self.adaptive.confidence.update(*self.confidence[rid], num_accepted)
            elif num_tokens == 1:  # a plain decode step
                self.adaptive.stepped(rid, self.num_decoding)

    def step_cost(self, out, seconds: float) -> None:
        """The step as plain decoding would pay it; prefill steps lie outside
        the decode cost curve."""
        if decode_only(out):
            self.adaptive.step_done(out.total_num_scheduled_tokens, seconds)

    def rates(self, out, runner_out, previous_end: float | None, ended_at: float, drafting: bool) -> None:
        """Wall time of the decode step since the previous step's end: of
        plain decoding, if no draft was in flight in that time; else of
        speculation, with the tokens it emitted (adaptive.py's gate)."""
        if previous_end is not None and decode_only(out):
            seconds = ended_at - previous_end
            if not drafting and self._undrafted_since == previous_end and plain_decode(out):
                self.adaptive.plain_step(out.total_num_scheduled_tokens, seconds)
            else:
                self.adaptive.speculative_step(self.num_decoding, emitted_tokens(out, runner_out), seconds)
        self._undrafted_since = None if drafting else ended_at


def emitted_tokens(out, runner_out) -> int:
    """Tokens the step's scheduled requests emitted (a verify step's accepted and bonus)."""
    index, sampled = runner_out.req_id_to_index, runner_out.sampled_token_ids
    return sum(len(sampled[index[rid]]) for rid in out.num_scheduled_tokens if rid in index)


def decode_only(out) -> bool:
    """Each scheduled branch decodes one token, plus its draft if it verifies one."""
    spec = out.scheduled_spec_decode_tokens
    return all(n == 1 + len(spec.get(rid, ())) for rid, n in out.num_scheduled_tokens.items())


def plain_decode(out) -> bool:
    """Each scheduled branch decodes one token, without a draft."""
    counts = out.num_scheduled_tokens
    return bool(counts) and not out.scheduled_spec_decode_tokens and all(n == 1 for n in counts.values())
