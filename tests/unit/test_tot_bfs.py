"""The BFS against a scripted server: states advance, values are kept, siblings are grouped."""

from __future__ import annotations

import re
import threading
from collections import Counter

import pytest

from vllm_seed.tot.bfs import BreadthFirstSearch
from vllm_seed.tot.client import OpenAIClient
from vllm_seed.tot.config import ToTConfig
from vllm_seed.tot.fake_server import FakeOpenAIServer
from vllm_seed.tot.blocksworld import BlocksworldTask
from vllm_seed.tot.creative import CreativeTask
from vllm_seed.tot.gsm8k import SOLUTION_PROMPT, THOUGHT_PROMPT, Gsm8kTask

# Thoughts by the state in the thought prompt ("" is the root).
THOUGHTS = {
    "": ["How many eggs are left? More text", "What is the price?", "How many eggs are eaten?"],
    "How many eggs are left?##9": [
        "How much money from 9 eggs?", "Is it sunny?", "What about 10 eggs?"],
    "What is the price?##2": ["How many eggs are sold?", "Who buys eggs?", "Why ducks?"],
}
# sub-question -> (answer reply, value reply); the parsed forms are in the comments.
EVALUATIONS = {
    "How many eggs are left?": ("16 - 3 - 4 = 9 eggs are left.", "Score: 8"),  # 9, 8
    "What is the price?": ("Each egg costs $2.", "15 is too high, so 6"),  # 2, 6
    "How many eggs are eaten?": ("3 + 4 = 7", "no number"),  # 7, 0
    "How much money from 9 eggs?": ("9 * 2 = 18", "10"),  # 18, 10
    "Is it sunny?": ("no idea", "1/10"),  # none, 1
    "What about 10 eggs?": ("20", "5.5"),  # 20, 5.5
    "How many eggs are sold?": ("9", "9 out of 10"),  # 9, 9
    "Who buys eggs?": ("people", "3"),  # none, 3
    "Why ducks?": ("1,000 reasons", "7"),  # 1000, 7
}
BEST_PATH = ("How many eggs are left?##9", "How much money from 9 eggs?##18")


def gsm8k_reply(prompt: str, body: dict) -> list[str]:
    """Scripted replies; an unexpected prompt raises, which the server turns into HTTP 500."""
    if "Please output the next sub-question" in prompt:
        state = re.search(r"sub-answer is: ##(.*)##\nPlease", prompt, re.S).group(1)
        seed = body["seed"]
        return THOUGHTS[state][seed: seed + body["n"]]
    if "Please output the answer of the [question]" in prompt:
        state = re.search(r"sub-answer is: ##(.*)##\nPlease", prompt, re.S).group(1)
        return {"\n".join(BEST_PATH): ["She makes $18 every day."]}[state]
    sub_question = re.search(r"the sub-question is: ##(.*?)##", prompt).group(1)
    answer, value = EVALUATIONS[sub_question]
    return [answer if "Please answer the sub-question" in prompt else value]


def solve(server, task, index=0, **options):
    config = ToTConfig(endpoint=server.url, model="fake-model", task=task.name, **options)
    with OpenAIClient(server.url, "fake-model", max_workers=16) as client:
        return BreadthFirstSearch(task, client, config, task.load_item(index)).run()


def group_of(body: dict) -> str:
    return body["vllm_xargs"]["seed_group"]


def test_selected_state_advances_and_every_value_is_kept():
    with FakeOpenAIServer(gsm8k_reply) as server:
        record = solve(server, Gsm8kTask(), max_steps=2, max_states=1)
        by_group = {group_of(b): b for b in server.requests}
    question = Gsm8kTask().load_item(0).question
    # Step 2 expands the best step-1 state, not the root (the authors' bug).
    assert by_group["gsm8k-0/2/0/thought"]["prompt"] == THOUGHT_PROMPT.format(
        question=question, state="How many eggs are left?##9")
    assert by_group["gsm8k-0/3/0/solution"]["prompt"] == SOLUTION_PROMPT.format(
        question=question, state="\n".join(BEST_PATH))
    assert [s["expanded"] for s in record["steps"]] == [
        [{"steps": [], "values": []}],
        [{"steps": ["How many eggs are left?##9"], "values": [8.0]}],
    ]
    assert record["steps"][0]["candidates"] == [
        {"parent": 0, "thought": "How many eggs are left?", "answer": "9", "value": 8.0,
         "selected": True},
        {"parent": 0, "thought": "What is the price?", "answer": "2", "value": 6.0,
         "selected": False},
        {"parent": 0, "thought": "How many eggs are eaten?", "answer": "7", "value": 0.0,
         "selected": False},
    ]
    assert [(c["answer"], c["value"]) for c in record["steps"][1]["candidates"]] == [
        ("18", 10.0), ("none", 1.0), ("20", 5.5)]
    assert record["best_state"] == {"steps": list(BEST_PATH), "values": [8.0, 10.0]}
    assert (record["solution"], record["answer"], record["correct"]) == (
        "She makes $18 every day.", "18", True)
    assert record["num_requests"] == 2 * (1 + 3 + 3) + 1
    assert len(record["latencies_s"]) == record["num_requests"]


def test_max_states_keeps_the_best_two_across_all_parents():
    with FakeOpenAIServer(gsm8k_reply) as server:
        record = solve(server, Gsm8kTask(), max_steps=2, max_states=2)
        groups = Counter(group_of(b) for b in server.requests)
    step1, step2 = record["steps"]
    assert step1["frontier"] == [
        {"steps": ["How many eggs are left?##9"], "values": [8.0]},
        {"steps": ["What is the price?##2"], "values": [6.0]},
    ]
    assert [(c["parent"], c["value"], c["selected"]) for c in step2["candidates"]] == [
        (0, 10.0, True), (0, 1.0, False), (0, 5.5, False),
        (1, 9.0, True), (1, 3.0, False), (1, 7.0, False),
    ]
    assert step2["frontier"] == [
        {"steps": list(BEST_PATH), "values": [8.0, 10.0]},
        {"steps": ["What is the price?##2", "How many eggs are sold?##9"], "values": [6.0, 9.0]},
    ]
    assert groups == Counter({
        "gsm8k-0/1/0/thought": 1, "gsm8k-0/1/0/answer": 3, "gsm8k-0/1/0/value": 3,
        "gsm8k-0/2/0/thought": 1, "gsm8k-0/2/0/answer": 3, "gsm8k-0/2/0/value": 3,
        "gsm8k-0/2/1/thought": 1, "gsm8k-0/2/1/answer": 3, "gsm8k-0/2/1/value": 3,
        "gsm8k-0/3/0/solution": 1,
    })


@pytest.mark.parametrize("mode, thought_requests, seeds", [
    ("single", [(3, 0)], {0}),
    ("n", [(1, 0), (1, 1), (1, 2)], {0, 1, 2}),
])
def test_thought_request_modes_give_the_same_tree(mode, thought_requests, seeds):
    with FakeOpenAIServer(gsm8k_reply) as server:
        record = solve(server, Gsm8kTask(), thought_requests=mode)
        step1 = [b for b in server.requests if group_of(b) == "gsm8k-0/1/0/thought"]
    assert sorted((b["n"], b["seed"]) for b in step1) == thought_requests
    assert {b["seed"] for b in step1} == seeds
    assert record["best_state"] == {"steps": list(BEST_PATH), "values": [8.0, 10.0]}
    assert record["num_requests"] == 2 * (len(thought_requests) + 3 + 3) + 1


def test_siblings_are_sent_concurrently():
    # Every phase but the solution sends 3 siblings; each must wait for the other two, so a
    # driver that sent them one by one would break the barrier (HTTP 500, the run fails).
    barrier = threading.Barrier(3, timeout=5)

    def reply(prompt, body):
        if "Please output the answer of the [question]" not in prompt:
            barrier.wait()
        return gsm8k_reply(prompt, body)

    with FakeOpenAIServer(reply) as server:
        record = solve(server, Gsm8kTask(), thought_requests="n")
    assert record["correct"] is True
    assert not barrier.broken


def test_terminal_state_is_carried_over_with_its_value():
    steps = {
        "": ["[PLAN END]", "unstack the blue block from on top of the orange block", "junk"],
        "unstack the blue block from on top of the orange block": [
            "(stack b d)", "put down the blue block", "pick up the red block"],
    }
    values = {"[PLAN END]": "9", "unstack the blue block from on top of the orange block": "5",
              "junk": "0", "stack the blue block on top of the yellow block": "4",
              "put down the blue block": "2", "pick up the red block": "1"}

    def reply(prompt, body):
        if "Please output a number between 0 and 10" in prompt:
            return [values[re.search(r"\[ACTION\]\n(.*)\n", prompt).group(1)]]
        plan = prompt.rsplit("[PLAN]\n", 1)[1]
        return steps[plan.strip()][: body["n"]]

    with FakeOpenAIServer(reply) as server:
        record = solve(server, BlocksworldTask(), max_states=2)
        groups = Counter(group_of(b) for b in server.requests)
    step1, step2 = record["steps"]
    assert [c["thought"] for c in step1["candidates"]] == [
        "[PLAN END]", "unstack the blue block from on top of the orange block", "junk"]
    assert step2["expanded"] == [{
        "steps": ["unstack the blue block from on top of the orange block"], "values": [5.0]}]
    assert step2["frontier"] == [
        {"steps": ["[PLAN END]"], "values": [9.0]},
        {"steps": ["unstack the blue block from on top of the orange block",
                   "stack the blue block on top of the yellow block"], "values": [5.0, 4.0]},
    ]
    # The best state is a finished (empty) plan: no solution request, and it is wrong.
    assert "blocksworld-0/3/0/solution" not in groups
    assert (record["solution"], record["answer"], record["correct"]) == ("[PLAN END]\n", "", False)


def test_creative_plan_then_passage_then_stop():
    task = CreativeTask()
    sentences = task.load_item(0).reference
    passage = "\n\n".join(f"Paragraph {i} text. {s}" for i, s in enumerate(sentences))

    def reply(prompt, body):
        if "Please output a number between 0 and 10" in prompt:
            return ["8" if "candidate passage" in prompt else "6"]
        if prompt.endswith("\nPassage:\n"):
            assert prompt.endswith("Plan:\nA plan.\nPassage:\n")
            return [passage] * body["n"]
        return ["Plan:\nA plan."] * body["n"]

    with FakeOpenAIServer(reply) as server:
        record = solve(server, task, max_steps=4)
    assert len(record["steps"]) == 2  # every state is terminal after the passage
    assert record["best_state"] == {"steps": ["Plan:\nA plan.", passage], "values": [6.0, 8.0]}
    assert record["num_requests"] == 2 * (1 + 3)  # no solution request: the passage is it
    assert (record["answer"], record["score"], record["correct"]) == ("4/4", 1.0, True)
