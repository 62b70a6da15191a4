"""The budget metric ``prob`` (splitc/runtimes/accuracy.py): top-1 and every class probability within 0.01, the measure
for scorers whose top-1 never changes (ResNet-50-thin calls every crop of ../shared/images class 0)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from splitc.cost import quantizers as C
from splitc.errors import SplitcError
from splitc.runtimes import accuracy


def test_probabilities_of_logits_scores_and_probability_vectors():
    logits = np.array([[2.0, 0.0, -1.0]])
    p = accuracy.probabilities(logits)
    assert p.sum() == pytest.approx(1.0) and p[0, 0] == pytest.approx(np.exp(2) / (np.exp(2) + 1 + np.exp(-1)))
    probs = np.array([[0.7, 0.2, 0.1]])
    assert np.array_equal(accuracy.probabilities(probs), probs)  # already probabilities: as they are
    assert accuracy.probabilities(np.array([[0.3]]))[0, 0] == pytest.approx(0.3)  # a score in [0, 1]
    assert accuracy.probabilities(np.array([[0.0]]))[0, 0] == pytest.approx(0.0)
    assert accuracy.probabilities(np.array([[2.0]]))[0, 0] == pytest.approx(1 / (1 + np.exp(-2)))  # a logit


def test_prob_sees_a_score_move_that_top1_and_cosine_do_not():
    ref = [[np.array([[0.999, 0.001]], np.float32)], [np.array([[0.990, 0.010]], np.float32)]]
    moved = [[np.array([[0.980, 0.020]], np.float32)], [np.array([[0.995, 0.005]], np.float32)]]
    m = accuracy.output_metrics(ref, moved)
    assert m["top1"] == 1.0 and m["cosine"] > 0.999  # both blind to it
    assert m["prob"] == 0.5  # the first sample's score moved by 0.019, the second's by 0.005
    assert not accuracy.meets(m, {"prob": 0.99}) and accuracy.meets(m, {"top1": 0.99, "cosine": 0.999})
    flipped = [[np.array([[0.4, 0.6]], np.float32)], ref[1]]
    assert accuracy.output_metrics(ref, flipped)["prob"] == 0.5  # a top-1 flip is never within


def test_prob_is_a_budget_the_cli_and_the_plan_accept():
    assert C.parse_budget("prob=0.99,cosine=0.999") == {"prob": 0.99, "cosine": 0.999}
    assert accuracy.plan_budget({"accuracy": {"budget": {"prob": 0.95}}}) == {"prob": 0.95}
    with pytest.raises(SplitcError, match="prob"):
        C.parse_budget("prob=2")
    with pytest.raises(SplitcError, match="top1\\|cosine\\|prob"):
        accuracy.plan_budget({"accuracy": {"budget": {"score": 0.9}}})


def test_auto_keeps_a_scorers_score_under_prob_where_top1_takes_the_coarsest_codec(tmp_path):
    """A 2-class scorer that calls everything class 0: under top1=0.99 auto takes its coarsest candidate (top-1 cannot
    fail); under prob=0.99 it must keep the score within 0.01 and takes a finer, larger one."""
    from splitc.compiler import import_model
    from splitc.cost.calibrate import Calibration
    from splitc.runtimes import ans

    if not ans.available():
        pytest.skip("constriction is not installed (auto's ladder is the +ans one)")
    rng = np.random.default_rng(0)
    w = np.concatenate([np.abs(rng.standard_normal((1, 8, 1, 1))), 0.1 * rng.standard_normal((1, 8, 1, 1))]).astype(np.float32)
    b = np.array([0.0, 6.0], np.float32)  # p(class 1) 0.003-0.2: class 0 always wins
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "w", "b"], ["c"]),
         helper.make_node("GlobalMaxPool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
         helper.make_node("Softmax", ["f"], ["y"], axis=1)], "scorer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "s.onnx")
    model = import_model(tmp_path / "s.onnx")
    samples = [{"x": rng.standard_normal((1, 8, 8, 8)).astype(np.float32) * 2} for _ in range(24)]
    chosen = {}
    for budget in ({"top1": 0.99}, {"prob": 0.99}):
        cal = Calibration(model, C.parse_codec("auto"), samples, budget)
        cal.verify(["r"])
        chosen[next(iter(budget))] = cal.codecs["r"]
    assert chosen["top1"].name == C.auto_candidates()[0]  # the coarsest: top-1 never moves
    assert chosen["prob"].error["prob"] >= 0.99
    assert chosen["prob"].measured_bytes > chosen["top1"].measured_bytes
