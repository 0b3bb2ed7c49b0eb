"""`chatcli ask --schema` for each of the 20 schemas (tests/schemas20.py), at temperature 0 and 1, on a tiny random
model (temperature 0 and 1) and on the real SmolLM2 (temperature 1): the command's stdout must parse and validate with
jsonschema every time.

The command runs in this process (chatcli.cli.main, the console script's own entry point, with the real argument
parsing, backend, streaming and exit codes), because 80 subprocesses would cost minutes of torch imports; a few real
subprocess runs are in test_structured.py."""

from __future__ import annotations

import io
import json

import jsonschema
import pytest

from chatcli.cli import main
from tests.schemas20 import SCHEMAS
from tests.tinymodels import make_tiny_model


@pytest.fixture(scope="module")
def tiny_json_dir(tmp_path_factory, tiny_tokenizer_dir):
    # the 400-token tokenizer and a context long enough for the longest schema at temperature 1 (see test_structured)
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-json", "llama", tokenizer_dir=tiny_tokenizer_dir,
                           max_position_embeddings=1024)


@pytest.fixture(autouse=True)
def _in_process(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # as `chatcli ask ... < /dev/null`: only the question

    def leave(code: int) -> None:  # the console script ends the process at once (cli._exit_now); a test returns
        raise SystemExit(code)

    monkeypatch.setattr("chatcli.cli._exit_now", leave)


@pytest.fixture(autouse=True, scope="module")
def _one_load_per_model():
    """Each ask would load its model again (0.7 s for SmolLM2, 20 times per test): the loaded model is kept for the
    module, as a chat keeps it across turns. What is under test is the answer, and every load is checked elsewhere."""
    from chatcli.engine import loader

    real, loaded = loader.load_model, {}

    def load_once(path, dtype=None, max_seq_len=None, quant=None, **kwargs):
        key = (str(path), str(dtype), max_seq_len, quant, tuple(sorted(kwargs.items())))
        if key not in loaded:
            loaded[key] = real(path, dtype, max_seq_len, quant, **kwargs)
        return loaded[key]

    loader.load_model = load_once
    yield
    loader.load_model = real


def ask(capfd, *args: str) -> tuple[int, str, str]:
    capfd.readouterr()
    try:
        main(["ask", "--no-save", *args])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out, err = capfd.readouterr()
    return code, out, err


def each_schema(capfd, tmp_path, model: str, temperature: str, max_tokens: str) -> None:
    for i, (name, schema) in enumerate(SCHEMAS.items()):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(schema))
        code, out, err = ask(capfd, "--model", model, "--schema", str(path), "-t", temperature, "--seed", str(i),
                             "--max-tokens", max_tokens, f"Reply with JSON for a {name}.")
        assert code == 0, (name, err)
        jsonschema.validate(json.loads(out), schema)


@pytest.mark.parametrize("temperature", ["0", "1"])
def test_ask_schema_on_a_tiny_random_model(capfd, tmp_path, tiny_json_dir, temperature):
    each_schema(capfd, tmp_path, str(tiny_json_dir), temperature, "700")


def test_ask_schema_on_smollm2(capfd, tmp_path, smollm2_dir):
    # Temperature 1 only, to keep make test inside its budget: every schema at temperature 0 on SmolLM2 goes through
    # the server in test_structured_server.py.
    each_schema(capfd, tmp_path, str(smollm2_dir), "1", "300")
