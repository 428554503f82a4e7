"""The model converters and publish_model.py on files that are not checkpoints: one line
naming the file and what is wrong (they ended in ``KeyError: 101``), exit status != 0."""
import importlib.util
import os.path as osp
import sys

import pytest

from tests.conftest import REPO, run_tool

TOOLS = {
    'tools/model_converters/m3i_to_backbone.py': ['OUT'],
    'tools/model_converters/internimage_to_m3i.py': ['OUT'],
    'tools/model_converters/publish_model.py': ['OUT_DIR', '--name', 'x'],
}
NOT_CHECKPOINTS = [(b'epoch 12: loss 0.31\n', 'is not a PyTorch checkpoint'),
                   (b'', 'is empty (0 bytes)'),
                   (b'PK\x03\x04' + b'\x00' * 200, 'is a truncated or damaged zip archive')]


def run_main(tool: str, argv) -> int:
    """The tool's ``main`` in this process; its exit status."""
    spec = importlib.util.spec_from_file_location('tool_under_test', osp.join(REPO, tool))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.main(argv) or 0
    except SystemExit as exit_:  # SystemExit('error: ...'): Python prints the message
        print(exit_.code, file=sys.stderr)
        return 1


@pytest.mark.parametrize('tool', sorted(TOOLS))
@pytest.mark.parametrize('content, reason', NOT_CHECKPOINTS)
def test_a_file_that_is_not_a_checkpoint_is_named(tool, content, reason, tmp_path, capsys):
    src = tmp_path / 'notes.pth'
    src.write_bytes(content)
    args = [str(tmp_path / a) if a.isupper() else a for a in TOOLS[tool]]
    assert run_main(tool, [str(src), *args]) != 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    assert f'cannot load {src}: it {reason}' in lines[0]
    assert not (tmp_path / 'OUT').exists() and not (tmp_path / 'OUT_DIR').exists()


def test_as_a_user_runs_it(tmp_path):
    src = tmp_path / 'notes.pth'
    src.write_bytes(NOT_CHECKPOINTS[0][0])
    res = run_tool(['tools/model_converters/m3i_to_backbone.py', str(src),
                    str(tmp_path / 'out.pth')], cwd=str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.strip() == (f'error: cannot load {src}: it {NOT_CHECKPOINTS[0][1]} '
                                  '(20 bytes starting with b\'epoc\'); give a checkpoint '
                                  'written by torch.save (a .pth file)')
