"""The command line on real temporary .npy / .npz files: eval, demo, check, and every kind of bad input.

Most cases call ``jaxloss.cli.main(argv)`` in this process (a Python start with JAX costs ~2 s); a
few run ``python -m jaxloss`` in a subprocess to show the whole path: exit codes, no traceback,
Ctrl-C, files larger than 100 batches.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from jaxloss import _cmd_check, cli, demo, npyfiles, streaming

F32 = np.float32
REL = 8 * float(np.finfo(F32).eps)  # the streamed float32 mean vs a float64 reference
N = 1000


def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jaxloss", *argv], capture_output=True, text=True, timeout=timeout, check=False
    )


def bce64(z, y):
    z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
    return np.logaddexp(0, z) - y * z


def fmean(x) -> float:
    x = np.asarray(x, np.float64).ravel()
    return math.fsum(x) / x.size


class Touch:
    """Unpickling this object creates the file ``path``: the proof that a loader ran pickle."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    z = (rng.normal(size=N) * 3).astype(F32)
    y = (rng.random(N) < 0.4).astype(F32)
    probs = rng.dirichlet(np.ones(4), size=N).astype(F32)
    paths = {
        "z": d / "z.npy",
        "y": d / "y.npy",
        "probs": d / "probs.npy",
        "stored": d / "stored.npz",
        "compressed": d / "compressed.npz",
        "mask": d / "mask.npy",
        "w": d / "w.npy",
    }
    np.save(paths["z"], z)
    np.save(paths["y"], y)
    np.save(paths["probs"], probs)
    np.savez(paths["stored"], z=z, y=y)
    np.savez_compressed(paths["compressed"], z=z, y=y)
    np.save(paths["mask"], rng.random(N) < 0.5)
    np.save(paths["w"], rng.random(N).astype(F32))
    raw = paths["z"].read_bytes()
    bad = {
        "truncated": raw[:-100],
        "header": raw[:10] + b"not a dict" * 8 + raw[90:],
        "random": rng.bytes(300),
        "empty": b"",
    }
    for name, content in bad.items():
        paths[name] = d / f"{name}.npy"
        paths[name].write_bytes(content)
    paths["short"] = d / "short.npy"
    np.save(paths["short"], z[:-1])
    paths["column"] = d / "column.npy"
    np.save(paths["column"], y[:, None])
    paths["strings"] = d / "strings.npy"
    np.save(paths["strings"], np.array(["a"] * N))
    paths["complex"] = d / "complex.npy"
    np.save(paths["complex"], z.astype(np.complex64))
    paths["ints"] = d / "ints.npy"
    np.save(paths["ints"], z.astype(np.int32))
    paths["zip_truncated"] = d / "zip_truncated.npz"
    paths["zip_truncated"].write_bytes(paths["stored"].read_bytes()[:3000])
    paths["deflate_truncated"] = d / "deflate_truncated.npz"
    with zipfile.ZipFile(paths["deflate_truncated"], "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("z.npy", raw[:-400])  # a valid header promising more rows than the member holds
    return {"dir": d, "Z": z, "Y": y, "P": probs, **{k: str(v) for k, v in paths.items()}}


def call(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> dict[str, str]:
    header, row = out.strip().splitlines()
    keys, values = header.split(), row.split("  ")
    return dict(zip(keys, [v.strip() for v in values if v.strip()], strict=True))


# ----------------------------------------------------------------------------- eval


def test_eval_prints_a_table_and_progress(files, capsys):
    code, out, err = call(capsys, "eval", "--loss", "bce-logits", files["z"], files["y"], "--batch-size", "128")
    assert code == 0
    row = table(out)
    assert row["loss"] == "bce-logits" and row["count"] == f"{N:,}" and row["nan"] == "0"
    assert row["device"].startswith("cpu")
    assert float(row["rows/s"].replace(",", "")) > 0
    np.testing.assert_allclose(float(row["value"]), fmean(bce64(files["Z"], files["Y"])), rtol=REL)
    assert "jaxloss eval: 100%" in err and "rows/s" in err


def test_eval_json_to_stdout_or_to_a_file(files, capsys, tmp_path):
    code, out, _ = call(capsys, "eval", "--loss", "mse", files["z"], files["y"], "--json")
    assert code == 0
    report = json.loads(out)  # one JSON object and nothing else
    assert set(report) >= {"loss", "value", "count", "nan_count", "rows", "device", "rows_per_second"}
    np.testing.assert_allclose(report["value"], fmean((files["Z"].astype(float) - files["Y"]) ** 2), rtol=REL)
    target = tmp_path / "result.json"
    code, out, _ = call(capsys, "eval", "--loss", "mse", files["z"], files["y"], f"--json={target}")
    assert code == 0
    assert json.loads(target.read_text())["value"] == report["value"]
    assert table(out)["loss"] == "mse"


def test_eval_npz_members_stored_and_compressed(files, capsys):
    expected = fmean(bce64(files["Z"], files["Y"]))
    for archive in ("stored", "compressed"):
        spec = files[archive]
        code, out, _ = call(capsys, "eval", "--loss", "bce-logits", f"{spec}:z", f"{spec}:y", "--batch-size", "96")
        assert code == 0, archive
        np.testing.assert_allclose(float(table(out)["value"]), expected, rtol=REL, err_msg=archive)


def test_inputs_are_opened_without_loading_them(files):
    assert isinstance(npyfiles.open_array(files["z"], "PRED"), np.memmap)
    assert isinstance(npyfiles.open_array(files["stored"] + ":z", "PRED"), np.memmap)
    rows = npyfiles.open_array(files["compressed"] + ":z", "PRED")
    assert not isinstance(rows, np.ndarray)  # decompressed slice by slice
    np.testing.assert_array_equal(rows[0:10], files["Z"][:10])
    np.testing.assert_array_equal(rows[10:25], files["Z"][10:25])
    np.testing.assert_array_equal(rows[5:6], files["Z"][5:6])  # a step back reopens the member
    rows.close()


def test_eval_where_weights_axis_and_base(files, capsys):
    mask, w = np.load(files["mask"]), np.load(files["w"])
    code, out, _ = call(
        capsys,
        "eval",
        "--loss",
        "bce-logits",
        files["z"],
        files["y"],
        "--where",
        files["mask"],
        "--weights",
        files["w"],
    )
    assert code == 0
    losses = bce64(files["Z"], files["Y"])
    expected = math.fsum(losses[mask] * w[mask]) / math.fsum(w[mask].astype(float))
    np.testing.assert_allclose(float(table(out)["value"]), expected, rtol=REL)
    assert table(out)["count"] == f"{int(mask.sum()):,}"

    cube = files["dir"] / "cube.npy"  # (rows, classes, 2): entropy over axis 1, in bits
    p = files["P"]
    np.save(cube, np.stack([p, p[::-1]], axis=-1))
    code, out, _ = call(capsys, "eval", "--loss", "entropy", str(cube), "--axis", "1", "--base", "2")
    assert code == 0
    bits = -(p.astype(float) * np.log2(p)).sum(-1)
    np.testing.assert_allclose(float(table(out)["value"]), fmean([bits, bits[::-1]]), rtol=REL)
    assert table(out)["count"] == f"{2 * N:,}"


def test_eval_reports_nan_rows(files, capsys, tmp_path):
    z = files["Z"].copy()
    z[[3, 500, 999]] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, z)
    code, out, err = call(capsys, "eval", "--loss", "bce-logits", str(path), files["y"], "--json")
    assert code == 0
    report = json.loads(out)
    assert report["value"] is None and report["nan_count"] == 3 and report["count"] == N
    assert "3 of 1,000 loss values are NaN" in err
    code, out, _ = call(capsys, "eval", "--loss", "bce-logits", str(path), files["y"])
    assert table(out)["value"] == "nan" and table(out)["nan"] == "3"


def test_no_command_prints_the_usage_and_runs_nothing(monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(demo, "run", lambda args: ran.append(args.command) or 0)
    assert cli.main([]) == 2 and ran == []
    err = capsys.readouterr().err
    assert err.startswith("usage: jaxloss") and "error: choose a command" in err


def test_help_and_argument_errors_do_not_import_jax():
    """The parser and its errors answer without importing JAX (JAX is imported by the command that needs it)."""
    code = (
        "import sys\nfrom jaxloss import cli\n"
        "for argv in (['--help'], ['fit'], ['eval']):\n"
        "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
        "print('jax imported' if 'jax' in sys.modules else 'no jax')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "no jax", result.stdout + result.stderr
    assert "usage: jaxloss" in result.stdout and "invalid choice: 'fit'" in result.stderr


def test_eval_help_lists_the_declared_losses(capsys):
    from jaxloss import _cmd_eval

    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    out = capsys.readouterr().out
    assert f"losses: {', '.join(_cmd_eval.LOSSES)}" in " ".join(out.split())
    assert cli._DEFAULT_MAX_MEMORY_MIB * 2**20 == _cmd_eval.DEFAULT_MAX_MEMORY  # the --help text's default


def test_squeeze_reads_a_column_against_a_vector_only_when_asked(tmp_path, capsys):
    z = np.linspace(-3, 3, 11, dtype=np.float32)
    y = (np.arange(11) % 2).astype(np.float32)
    np.save(tmp_path / "zc.npy", z[:, None])
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "z.npy", z)
    zc, yv = str(tmp_path / "zc.npy"), str(tmp_path / "y.npy")
    code, _, err = call(capsys, "eval", "--loss", "bce-logits", zc, yv)
    assert code == 2 and "got (11, 1) and (11,) (for (N, 1) against (N,), pass --squeeze)" in err
    _, expected, _ = call(capsys, "eval", "--loss", "bce-logits", str(tmp_path / "z.npy"), yv)
    for argv in ((zc, yv), (str(tmp_path / "z.npy"), str(tmp_path / "y.npy"))):
        code, out, _ = call(capsys, "eval", "--loss", "bce-logits", "--squeeze", *argv)
        assert code == 0 and table(out)["value"] == table(expected)["value"]


def test_info_command_prints_jaxloss_info(capsys):
    import jaxloss

    assert cli.main(["info"]) == 0
    assert capsys.readouterr().out.strip() == jaxloss.info()


def test_demo_plot_writes_the_convergence_chart(tmp_path):
    pytest.importorskip("matplotlib")
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -1.0, 0.5, 0.0], np.float32) > 0).astype(np.float32)
    history = demo.compare_losses(x, y, x, y, steps=12, every=4)
    assert set(history) == {"squared error", "cross-entropy"}
    for loss, held_out, accuracy in history.values():
        assert loss.shape == held_out.shape == accuracy.shape == (12,) and jnp.isfinite(held_out).all()
    demo._plot(history, str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_library_prints_nothing_unasked(capfd):
    mean, rows = streaming.evaluate(lambda a, b: (a - b) ** 2, np.arange(10.0), np.zeros(10), batch_size=4)
    assert float(mean) == 28.5 and rows == 10
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_ctrl_c_inside_main_is_one_line_and_exit_130(files, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(streaming, "stream", interrupted)
    code, out, err = call(capsys, "eval", "--loss", "mse", files["z"], files["y"])
    assert (code, out, err) == (130, "", "jaxloss eval: interrupted\n")


# ----------------------------------------------------------------------------- bad input: one line, exit 2


# ----------------------------------------------------------------------------- categorical losses

C = 6  # classes


def log_softmax64(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    """Logits (N, C), class indices (N,) with padding (-100) and the rows they keep, one-hot and soft labels,
    target logits, and probability rows (p, q) as .npy files."""
    d = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(1)
    z = (rng.normal(size=(N, C)) * 3).astype(F32)
    k = rng.integers(0, C, N).astype(np.int32)
    padded = k.copy()
    padded[::10] = -100
    soft = rng.dirichlet(np.ones(C), size=N).astype(F32)
    t = (rng.normal(size=(N, C)) * 3).astype(F32)
    p = np.exp(log_softmax64(z)).astype(F32)
    q = np.exp(log_softmax64(t)).astype(F32)
    arrays = {
        "z": z,
        "k": k,
        "k64": k.astype(np.int64),
        "padded": padded,
        "keep": padded != -100,
        "onehot": np.eye(C, dtype=F32)[k],
        "soft": soft,
        "t": t,
        "p": p,
        "q": q,
        "kfloat": k.astype(F32),
        "tint": t.astype(np.int32),
        "k2d": k[:, None],
    }
    paths = {name: str(d / f"{name}.npy") for name in arrays}
    for name, x in arrays.items():
        np.save(paths[name], x)
    return {"dir": d, **{name.upper(): x for name, x in arrays.items()}, **paths}


def eval_value(capsys, *argv) -> float:
    code, out, err = call(capsys, "eval", *argv)
    assert code == 0, err
    return float(table(out)["value"])


def test_eval_ce_logits_integer_labels_are_indices_float_labels_distributions(classes, capsys):
    z, k = classes["Z"], classes["K"]
    ce = -log_softmax64(z)[np.arange(N), k]
    for labels in ("k", "k64"):  # int32 and int64 files: class indices
        got = eval_value(capsys, "--loss", "ce-logits", classes["z"], classes[labels], "--batch-size", "96")
        np.testing.assert_allclose(got, fmean(ce), rtol=REL)
    # The same labels one-hot, as a float file: distributions, the same mean.
    np.testing.assert_allclose(
        eval_value(capsys, "--loss", "ce-logits", classes["z"], classes["onehot"]), fmean(ce), rtol=REL
    )
    soft = -(classes["SOFT"] * log_softmax64(z)).sum(-1)
    np.testing.assert_allclose(
        eval_value(capsys, "--loss", "ce-logits", classes["z"], classes["soft"]), fmean(soft), rtol=REL
    )
    # Padding rows (-100) left out with --where: never checked, never read.
    keep = classes["KEEP"]
    code, out, _ = call(
        capsys, "eval", "--loss", "ce-logits", classes["z"], classes["padded"], "--where", classes["keep"]
    )
    assert code == 0 and table(out)["count"] == f"{int(keep.sum()):,}"
    np.testing.assert_allclose(float(table(out)["value"]), fmean(ce[keep]), rtol=REL)
    # The class axis elsewhere: (N, C) saved as (N, C, 1) read with --axis 1.
    cube = classes["dir"] / "cube.npy"
    np.save(cube, z[:, :, None])
    np.save(classes["dir"] / "k_col.npy", k[:, None])
    got = eval_value(capsys, "--loss", "ce-logits", str(cube), str(classes["dir"] / "k_col.npy"), "--axis", "1")
    np.testing.assert_allclose(got, fmean(ce), rtol=REL)


def test_eval_kl_logits_ce_and_relative_entropy(classes, capsys):
    lz, lt = log_softmax64(classes["Z"]), log_softmax64(classes["T"])
    kl_bits = (np.exp(lt) * (lt - lz)).sum(-1) / np.log(2)
    got = eval_value(capsys, "--loss", "kl-logits", classes["z"], classes["t"], "--base", "2")
    np.testing.assert_allclose(got, fmean(kl_bits), rtol=REL)
    p, q = classes["P"].astype(np.float64), classes["Q"].astype(np.float64)
    ce = -(classes["SOFT"] * np.log(p)).sum(-1)
    np.testing.assert_allclose(eval_value(capsys, "--loss", "ce", classes["p"], classes["soft"]), fmean(ce), rtol=REL)
    rel = (p * np.log(p / q)).sum(-1)
    np.testing.assert_allclose(
        eval_value(capsys, "--loss", "relative-entropy", classes["p"], classes["q"]), fmean(rel), rtol=REL
    )


def test_eval_json_of_a_categorical_loss_is_written_atomically(classes, capsys, tmp_path):
    target = tmp_path / "ce.json"
    code, out, _ = call(capsys, "eval", "--loss", "ce-logits", classes["z"], classes["k"], f"--json={target}")
    assert code == 0 and out.startswith("loss")
    report = json.loads(target.read_text())
    assert report["loss"] == "ce-logits" and report["count"] == N and report["checks"] == "on"
    assert [p.name for p in tmp_path.iterdir()] == ["ce.json"]  # no temporary file left
    # A refused input writes nothing (not even an empty or partial file).
    bad = tmp_path / "bad.json"
    code, _, _ = call(capsys, "eval", "--loss", "ce-logits", classes["z"], classes["padded"], f"--json={bad}")
    assert code == 2 and not bad.exists() and [p.name for p in tmp_path.iterdir()] == ["ce.json"]


def test_eval_refuses_a_class_index_out_of_range_with_a_message_not_a_number(classes, capsys, tmp_path):
    k = classes["K"].copy()
    k[[300, 301, 977]] = [C, -1, 10**6]
    path = tmp_path / "labels.npy"
    np.save(path, k)
    code, out, err = call(capsys, "eval", "--loss", "ce-logits", classes["z"], str(path), "--batch-size", "128")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == (
        f"jaxloss eval: error: TARGETS {path}: labels must be class indices in [0, {C}) (PRED has {C} classes along "
        f"axis -1); 3 values fail, the first in row 300: labels[300] = {C}. Fix the labels upstream: each row's label "
        f"names one of its {C} classes (leave padding rows, labelled e.g. -100, out of the loss: --where MASK). "
        "(--no-check skips this check.)"
    )
    # Padding without --where is refused the same way; --no-check gives NaN rows, counted and warned about.
    code, _, err = call(capsys, "eval", "--loss", "ce-logits", classes["z"], classes["padded"])
    assert code == 2 and "the first in row 0: labels[0] = -100." in err
    code, out, err = call(capsys, "eval", "--loss", "ce-logits", classes["z"], str(path), "--no-check")
    assert code == 0 and table(out)["value"] == "nan" and table(out)["nan"] == "3"
    assert "3 of 1,000 loss values are NaN" in err
    # int64 indices beyond int32 (computed in int32 without x64) are refused too, never wrapped to a valid class.
    wide = classes["K64"].copy()
    wide[5] = 2**32 + 1
    np.save(tmp_path / "wide.npy", wide)
    code, _, err = call(capsys, "eval", "--loss", "ce-logits", classes["z"], str(tmp_path / "wide.npy"))
    assert code == 2 and "labels must be class indices in [0, 6)" in err and "the first in row 5" in err


def test_eval_categorical_value_checks(classes, capsys, tmp_path):
    soft = classes["SOFT"].copy()
    soft[40, 2] = 1.5
    np.save(tmp_path / "soft.npy", soft)
    code, _, err = call(capsys, "eval", "--loss", "ce-logits", classes["z"], str(tmp_path / "soft.npy"))
    assert code == 2 and "labels must be in [0, 1]; 1 value fails, the first in row 40: labels[40, 2] = 1.5" in err
    code, _, err = call(capsys, "eval", "--loss", "ce", classes["p"], str(tmp_path / "soft.npy"))
    assert code == 2 and "targets must be in [0, 1]; 1 value fails, the first in row 40: targets[40, 2] = 1.5" in err
    q = classes["Q"].copy()
    q[7, 0] = -0.25
    np.save(tmp_path / "q.npy", q)
    code, _, err = call(capsys, "eval", "--loss", "relative-entropy", classes["p"], str(tmp_path / "q.npy"))
    assert (
        code == 2 and "reference must be in [0, 1]; 1 value fails, the first in row 7: reference[7, 0] = -0.25" in err
    )


def test_subprocess_class_index_out_of_range_is_one_line_exit_2(classes, tmp_path):
    k = classes["K"].copy()
    k[17] = 99
    np.save(tmp_path / "k.npy", k)
    result = run("eval", "--loss", "ce-logits", classes["z"], str(tmp_path / "k.npy"))
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"jaxloss eval: error: TARGETS {tmp_path / 'k.npy'}: labels must be class indices in [0, 6)"
    )


def _categorical_bad_cases():
    ce = ("eval", "--loss", "ce-logits")
    return {
        "float class indices": ((*ce, "{z}", "{kfloat}"), "must be saved as integers"),
        "indices of the wrong shape": ((*ce, "{z}", "{k2d}"), "integer labels are class indices, one per row"),
        "distributions of the wrong shape": ((*ce, "{z}", "{soft_short}"), "same shape"),
        "integer target logits": (
            ("eval", "--loss", "kl-logits", "{z}", "{tint}"),
            "expected floating-point target_logits",
        ),
        "missing labels": ((*ce, "{z}"), "needs a second file with the labels"),
        "vector of logits": ((*ce, "{k_float_vector}", "{k}"), "class axis"),
        "class axis is the row axis": ((*ce, "{z}", "{k}", "--axis", "0"), "row axis"),
        "corrupt labels": ((*ce, "{z}", "{corrupt}"), "corrupt .npy header"),
        "truncated labels": ((*ce, "{z}", "{truncated_labels}"), "truncated"),
        "string labels": ((*ce, "{z}", "{string_labels}"), "dtype <U1"),
        "base for ce-logits": ((*ce, "{z}", "{k}", "--base", "2"), "--base applies to"),
        "where per class": ((*ce, "{z}", "{k}", "--where", "{class_mask}"), "fits neither"),
    }


@pytest.mark.parametrize("case", list(_categorical_bad_cases()))
def test_categorical_bad_input_is_one_line_on_stderr_and_exit_2(case, classes, capsys):
    d = classes["dir"]
    extra = {
        "soft_short": d / "soft_short.npy",
        "k_float_vector": d / "k_float_vector.npy",
        "corrupt": d / "corrupt.npy",
        "truncated_labels": d / "truncated_labels.npy",
        "string_labels": d / "string_labels.npy",
        "class_mask": d / "class_mask.npy",
    }
    np.save(extra["soft_short"], classes["SOFT"][:, :-1])
    np.save(extra["k_float_vector"], classes["KFLOAT"])
    raw = pathlib.Path(classes["k"]).read_bytes()
    extra["corrupt"].write_bytes(raw[:10] + b"not a dict" * 8 + raw[90:])
    extra["truncated_labels"].write_bytes(raw[:-40])
    np.save(extra["string_labels"], np.array(["a"] * N))
    np.save(extra["class_mask"], np.ones((N, C + 1), bool))
    argv, phrase = _categorical_bad_cases()[case]
    paths = {**{k: v for k, v in classes.items() if isinstance(v, str)}, **{k: str(v) for k, v in extra.items()}}
    code, out, err = call(capsys, *(a.format(**paths) for a in argv))
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("jaxloss") and "error:" in err, err
    assert "Traceback" not in err
    assert phrase in err, err


def test_eval_help_lists_the_categorical_losses(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    out = capsys.readouterr().out
    listed = " ".join(out.split("losses:")[1].split()).split(", ")
    assert {"ce-logits", "kl-logits", "ce", "relative-entropy", "entropy-logits"} <= set(listed), listed


def _bad_cases():
    mse = ("eval", "--loss", "mse")
    return {
        "missing file": ((*mse, "{missing}", "{y}"), "no such file"),
        "directory": ((*mse, "{dir}", "{y}"), "is a directory"),
        "empty file": ((*mse, "{empty}", "{y}"), "empty"),
        "random bytes": ((*mse, "{random}", "{y}"), "not a .npy file"),
        "truncated": ((*mse, "{truncated}", "{y}"), "truncated"),
        "wrong header": ((*mse, "{header}", "{y}"), "corrupt .npy header"),
        "npz missing key": ((*mse, "{stored}:nope", "{y}"), "no array named 'nope'"),
        "npz without key": ((*mse, "{stored}", "{y}"), "name the array as"),
        "npz truncated": ((*mse, "{zip_truncated}:z", "{y}"), "not a valid .npz"),
        "npz member truncated": ((*mse, "{deflate_truncated}:z", "{y}"), "truncated"),
        "lengths differ": ((*mse, "{z}", "{short}"), "same shape"),
        "shapes differ": ((*mse, "{z}", "{column}"), "same shape"),
        "string predictions": ((*mse, "{strings}", "{y}"), "dtype <U1"),
        "string targets": ((*mse, "{z}", "{strings}"), "dtype <U1"),
        "complex predictions": ((*mse, "{complex}", "{y}"), "complex64"),
        "integer predictions": ((*mse, "{ints}", "{y}"), "int32"),
        "unknown loss": (("eval", "--loss", "hinge", "{z}", "{y}"), "invalid choice: 'hinge'"),
        "unknown command": (("fit",), "invalid choice: 'fit'"),
        "axis out of range": (("eval", "--loss", "entropy", "{probs}", "--axis", "2"), "out of range"),
        "axis is the row axis": (("eval", "--loss", "entropy", "{probs}", "--axis", "-2"), "row axis"),
        "entropy of a vector": (("eval", "--loss", "entropy-logits", "{z}"), "class axis"),
        "missing targets": ((*mse, "{z}"), "needs a second file"),
        "extra targets": (("eval", "--loss", "binary-entropy", "{z}", "{y}"), "takes one file"),
        "base for mse": ((*mse, "{z}", "{y}", "--base", "2"), "--base applies"),
        "base 1": (("eval", "--loss", "entropy", "{probs}", "--base", "1"), "not 1"),
        "axis for bce": (("eval", "--loss", "bce", "{z}", "{y}", "--axis", "0"), "--axis applies"),
        "batch size 0": ((*mse, "{z}", "{y}", "--batch-size", "0"), "positive"),
        "json dir missing": ((*mse, "{z}", "{y}", "--json={dir}/no/such/dir/out.json"), "does not exist"),
        "json is a directory": ((*mse, "{z}", "{y}", "--json={dir}"), "is a directory"),
        "where not boolean": ((*mse, "{z}", "{y}", "--where", "{w}"), "booleans"),
        "weights wrong shape": ((*mse, "{z}", "{y}", "--weights", "{probs}"), "fits neither"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input_is_one_line_on_stderr_and_exit_2(case, files, capsys):
    argv, phrase = _bad_cases()[case]
    paths = {**files, "missing": str(files["dir"] / "missing.npy"), "dir": str(files["dir"])}
    code, out, err = call(capsys, *(a.format(**paths) for a in argv))
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("jaxloss") and "error:" in err, err
    assert phrase in err, err


def test_json_write_failing_after_the_run_is_one_line_and_no_table(files, capsys, monkeypatch, tmp_path):
    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    code, out, err = call(capsys, "eval", "--loss", "mse", files["z"], files["y"], f"--json={tmp_path / 'r.json'}")
    assert (code, out) == (2, "")
    *progress, last = err.splitlines()  # the run itself went well and reported its progress
    assert all(line.startswith("jaxloss eval: ") and "rows" in line for line in progress)
    assert last.startswith("jaxloss eval: error: --json") and "No space left on device" in last
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temporary file is left behind


def test_json_is_written_whole_with_the_usual_permissions(files, capsys, tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old\n")
    code, _, _ = call(capsys, "eval", "--loss", "mse", files["z"], files["y"], f"--json={target}")
    assert code == 0
    assert json.loads(target.read_text())["loss"] == "mse"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_json_is_standard_for_infinite_and_nan_values(files, capsys, tmp_path):
    for fill, special in ((np.inf, "inf"), (np.nan, "nan")):
        path = tmp_path / "z.npy"
        np.save(path, np.full(N, fill, F32))
        code, out, _ = call(capsys, "eval", "--loss", "mse", str(path), files["y"], "--json")
        assert code == 0
        report = json.loads(out, parse_constant=lambda c: pytest.fail(f"not standard JSON: {c}"))
        assert (report["value"], report["value_nonfinite"]) == (None, special)
        assert table(call(capsys, "eval", "--loss", "mse", str(path), files["y"])[1])["value"] == special


# ----------------------------------------------------------------------------- value checks


def test_value_checks_name_the_file_the_first_row_the_value_and_the_count(files, capsys, tmp_path):
    y = files["Y"].copy()
    y[[700, 701, 950]] = [2.0, -0.5, 255.0]  # in the sixth batch of 128 rows and later
    path = tmp_path / "labels.npy"
    np.save(path, y)
    code, out, err = call(capsys, "eval", "--loss", "bce-logits", files["z"], str(path), "--batch-size", "128")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == (
        f"jaxloss eval: error: TARGETS {path}: labels must be in [0, 1]; 3 values fail, the first in row 700: "
        "labels[700] = 2.0. Fix the labels upstream (hard labels 0/1 or soft labels in [0, 1]). "
        "(--no-check skips this check.)"
    )
    mask = np.ones(N, bool)
    mask[[700, 701, 950]] = False  # the rows left out are not checked, as in jaxloss.checked
    np.save(tmp_path / "mask.npy", mask)
    code, out, _ = call(
        capsys, "eval", "--loss", "bce-logits", files["z"], str(path), "--where", str(tmp_path / "mask.npy")
    )
    assert code == 0
    expected = fmean(bce64(files["Z"][mask], y[mask]))
    np.testing.assert_allclose(float(table(out)["value"]), expected, rtol=REL)

    code, out, err = call(capsys, "eval", "--loss", "bce-logits", files["z"], str(path), "--no-check")
    assert code == 0 and table(out)["checks"] == "off"
    assert "value checks skipped (--no-check)" in err


def test_value_checks_per_element_of_2d_probabilities(files, capsys, tmp_path):
    p = files["P"].copy()
    p[12, 3] = 1.5
    np.save(tmp_path / "p.npy", p)
    code, _, err = call(capsys, "eval", "--loss", "entropy", str(tmp_path / "p.npy"))
    assert code == 2
    assert "probabilities must be in [0, 1]; 1 value fails, the first in row 12: probabilities[12, 3] = 1.5" in err


def test_bool_labels_read_as_numpy_reads_them(files, capsys, tmp_path):
    y = files["Y"] > 0
    path = tmp_path / "yb.npy"
    np.save(path, y)
    data = bytearray(path.read_bytes())
    offset = len(data) - N
    for i in np.flatnonzero(y)[:10]:
        data[offset + i] = 62  # a nonzero byte other than 1: NumPy reads True
    path.write_bytes(bytes(data))
    code, out, _ = call(capsys, "eval", "--loss", "bce-logits", files["z"], str(path), "--json")
    assert code == 0
    np.testing.assert_allclose(json.loads(out)["value"], fmean(bce64(files["Z"], y)), rtol=REL)


# ----------------------------------------------------------------------------- byte order, memory budget


def test_big_endian_files_are_read(files, capsys, tmp_path):
    for name, x in (("z", files["Z"]), ("y", files["Y"])):
        np.save(tmp_path / f"{name}.npy", x.astype(">f4"))
    np.savez_compressed(tmp_path / "be.npz", z=files["Z"].astype(">f8"))
    expected = fmean(bce64(files["Z"], files["Y"]))
    for pred in (tmp_path / "z.npy", f"{tmp_path / 'be.npz'}:z"):
        code, out, err = call(capsys, "eval", "--loss", "bce-logits", str(pred), str(tmp_path / "y.npy"), "--json")
        assert code == 0, err
        np.testing.assert_allclose(json.loads(out)["value"], expected, rtol=REL)


def test_memory_budget_sizes_batches_and_refuses_wider_rows(capsys, tmp_path):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(64, 2**16)).astype(F32)  # rows of 256 KiB
    np.savez_compressed(tmp_path / "wide.npz", logits=logits)
    spec = f"{tmp_path / 'wide.npz'}:logits"
    code, out, _ = call(capsys, "eval", "--loss", "entropy-logits", spec, "--max-memory", "8M", "--json")
    assert code == 0  # batches of 4 rows (8 x 256 KiB each), not the default 16
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(json.loads(out)["value"], fmean(-(p * np.log(p)).sum(-1)), rtol=REL)
    code, _, err = call(capsys, "eval", "--loss", "entropy-logits", spec, "--max-memory", "1M")
    assert code == 2 and "one row of the inputs takes 262,144 bytes" in err and "--max-memory" in err
    code, _, err = call(capsys, "eval", "--loss", "entropy-logits", spec, "--max-memory", "8M", "--batch-size", "64")
    assert code == 2 and "--batch-size 64 needs about 128 MiB, more than --max-memory 8M" in err
    code, _, err = call(capsys, "eval", "--loss", "entropy-logits", spec, "--max-memory", "lots")
    assert code == 2 and "--max-memory 'lots': expected a size" in err


def test_object_arrays_are_refused_without_unpickling(files, capsys, tmp_path):
    marker = tmp_path / "unpickled"
    evil = np.array([Touch(marker)], dtype=object)
    np.save(tmp_path / "objects.npy", evil, allow_pickle=True)
    np.savez(tmp_path / "objects.npz", z=evil)
    for spec in (tmp_path / "objects.npy", f"{tmp_path / 'objects.npz'}:z"):
        code, out, err = call(capsys, "eval", "--loss", "binary-entropy", str(spec))
        assert (code, out) == (2, "")
        assert "Python objects" in err and len(err.splitlines()) == 1
    assert not marker.exists()


# ----------------------------------------------------------------------------- subprocess: the whole path


def test_subprocess_streams_a_file_larger_than_100_batches(tmp_path):
    rng = np.random.default_rng(1)
    n, batch = 150 * 1024 + 7, 1024
    z = rng.normal(size=n).astype(F32)
    y = (rng.random(n) < 0.5).astype(F32)
    np.save(tmp_path / "z.npy", z)
    np.savez(tmp_path / "labels.npz", y=y)
    result = run(
        "eval", "--loss", "bce-logits", str(tmp_path / "z.npy"), f"{tmp_path / 'labels.npz'}:y",
        "--batch-size", str(batch), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["count"] == n and report["rows"] == n
    np.testing.assert_allclose(report["value"], fmean(bce64(z, y)), rtol=REL)
    assert "100%" in result.stderr


def test_subprocess_pickle_is_refused_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    (tmp_path / "evil.npy").write_bytes(pickle.dumps(Touch(marker)))
    result = run("eval", "--loss", "binary-entropy", str(tmp_path / "evil.npy"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "never unpickled" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_subprocess_ctrl_c_exits_130_with_one_line(tmp_path):
    n = 4_000_000  # in batches of 64 rows: seconds of work, so the interrupt lands mid-stream
    np.save(tmp_path / "z.npy", np.zeros(n, F32))
    np.save(tmp_path / "y.npy", np.ones(n, F32))
    argv = ["eval", "--loss", "mse", str(tmp_path / "z.npy"), str(tmp_path / "y.npy"), "--batch-size", "64"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # As from a terminal: a test run started in the background (`cmd &` in a script) ignores SIGINT, a child
    # inherits an ignored signal, and its Python then installs no KeyboardInterrupt handler at all. A handler
    # (not SIG_IGN) in this process is reset to the default in the child when it starts.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "jaxloss", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        first = process.stderr.readline()  # the progress line that opens the stream
        assert first.startswith("jaxloss eval:"), first
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert out == ""
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "jaxloss eval: interrupted"


# A child that runs `jaxloss eval` with os.fsync made to stop the process where the output is written but not yet
# renamed into place: the parent kills it there (SIGKILL), between the write and the rename.
_PAUSE_IN_FSYNC = """
import os, sys, time
from jaxloss import cli
def fsync(fd):
    sys.stderr.write("FSYNC\\n"); sys.stderr.flush(); time.sleep(600)
os.fsync = fsync
sys.exit(cli.main(sys.argv[1:]))
"""


def test_subprocess_sigkill_mid_write_leaves_no_partial_output(tmp_path):
    n = 2_000_000
    np.save(tmp_path / "z.npy", np.zeros(n, F32))
    np.save(tmp_path / "y.npy", np.ones(n, F32))
    inputs = [str(tmp_path / "z.npy"), str(tmp_path / "y.npy")]
    for old in (None, "old content\n"):
        directory = tmp_path / ("fresh" if old is None else "over_old")
        directory.mkdir()
        target = directory / "out.json"
        if old is not None:
            target.write_text(old)
        argv = ["eval", "--loss", "mse", *inputs, f"--json={target}"]
        process = subprocess.Popen(
            [sys.executable, "-c", _PAUSE_IN_FSYNC, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            for line in process.stderr:
                if line == "FSYNC\n":  # the JSON is written to the temporary file, not yet renamed
                    break
            else:
                pytest.fail("the child never reached fsync")
            written = [p for p in directory.iterdir() if p.name.startswith(".out.json.")]
            assert len(written) == 1 and json.loads(written[0].read_text())["count"] == n  # mid-write
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
        finally:
            process.kill()
            process.communicate()
        assert process.returncode == -signal.SIGKILL
        if old is None:
            assert not target.exists()  # absent, never partial
        else:
            assert target.read_text() == old  # the old content, whole
        # What SIGKILL leaves: the hidden temporary file, complete, beside out.json (never under its name).
        assert [p.name for p in directory.iterdir() if p.name != "out.json"] == [written[0].name]


def test_subprocess_sigkill_mid_stream_writes_nothing(tmp_path):
    n = 4_000_000
    np.save(tmp_path / "z.npy", np.zeros(n, F32))
    np.save(tmp_path / "y.npy", np.ones(n, F32))
    target = tmp_path / "out.json"
    argv = ["eval", "--loss", "mse", str(tmp_path / "z.npy"), str(tmp_path / "y.npy"), "--batch-size", "64"]
    process = subprocess.Popen(
        [sys.executable, "-m", "jaxloss", *argv, f"--json={target}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr.readline().startswith("jaxloss eval:")  # streaming has started
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.communicate()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.npy", "z.npy"]


def test_subprocess_demo():
    result = run("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "on cpu" in out
    assert "optax.adam" in out and "jaxloss.bce_with_logits" in out
    for quantity in ("BCE, fitted model", "predictive entropy (bits)", "MSE of probabilities"):
        assert quantity in out
    assert out.count("1,000,000") >= 4
    for line in ("= 1.000 bits", "= 0.000 bits", "= 0.469 bits"):
        assert line in out
    assert "train" in result.stderr


def test_subprocess_check_passes_on_every_backend():
    result = run("check")
    assert result.returncode == 0, result.stdout
    assert "FAIL" not in result.stdout and "all checks passed" in result.stdout
    lines = result.stdout.splitlines()
    for name in (
        "sigmoid_binary_cross_entropy",
        "entropy_from_logits",
        "binary_entropy",
        "mse",
        "softmax_cross_entropy",
        "softmax_cross_entropy_with_integer_labels",
        "kl_divergence_from_logits",
        "cross_entropy",
        "relative_entropy",
        "ce_with_logits",
    ):
        assert any(line.startswith(name + " ") and "pass" in line for line in lines), name


def test_check_exits_1_and_names_a_failure(capsys, monkeypatch):
    def broken():
        raise AssertionError("dL/dz at z = 0: got -1, expected -0.5")

    monkeypatch.setattr(
        _cmd_check, "derivative_checks", lambda dtype: {"f": [("edges", broken), ("fine", lambda: None)]}
    )
    code, out, _ = call(capsys, "check")
    assert code == 1
    assert "FAIL 1/2" in out and "cpu: f: edges: dL/dz at z = 0: got -1, expected -0.5" in out
