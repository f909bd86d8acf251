"""Settings: defaults, parsing of strings, errors that name the dotted key, light imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ai_modules.errors import SettingsError
from ai_modules.settings import (EMBEDDED_BACKENDS, STAGE_NAMES, PipelineSettings, default_settings, parse_settings,
                                 settings_reference)


def test_defaults_round_trip_through_parse():
    defaults = default_settings()
    assert defaults["segment"]["size"] == 256 and defaults["segment"]["object_size"] == 200
    assert defaults["export"]["formats"] == ["ply", "splat", "glb", "preview", "turntable"]
    assert defaults["export"]["ply_sh_degree"] == 3
    assert parse_settings(defaults) == PipelineSettings()
    assert parse_settings(None) == PipelineSettings()


def test_strings_from_environment_are_coerced():
    s = parse_settings({"device": "cpu", "segment": {"size": "128", "object_size": "100"},
                        "depth": {"thickness": "0.7"}, "multiview": {"side_walls": "false"},
                        "export": {"formats": "ply, splat", "preview_azimuths": "0,90"}})
    assert s.segment.size == 128 and s.depth.thickness == 0.7 and s.multiview.side_walls is False
    assert s.export.formats == ("ply", "splat") and s.export.preview_azimuths == (0.0, 90.0)


@pytest.mark.parametrize(("mapping", "key", "fragment"), [
    ({"segment": {"size": "abc"}}, "pipeline.segment.size", "must be an integer"),
    ({"segment": {"size": True}}, "pipeline.segment.size", "must be an integer"),
    ({"segment": {"size": 8}}, "pipeline.segment.size", "in [64, 2048]"),
    ({"segment": {"sise": 256}}, "pipeline.segment.sise", "did you mean `size`"),
    ({"segmnt": {}}, "pipeline.segmnt", "did you mean `segment`"),
    ({"segment": {"backend": "u2net"}}, "pipeline.segment.backend", "`auto`, `alpha_grabcut`, `rembg`"),
    ({"depth": {"thickness": "nan"}}, "pipeline.depth.thickness", "must be a number"),
    ({"multiview": {"side_walls": "maybe"}}, "pipeline.multiview.side_walls", "boolean"),
    ({"multiview": {"backend": "zero123"}}, "pipeline.multiview.backend", "`syncdreamer`"),
    ({"enhance": {"prompt": 3}}, "pipeline.enhance.prompt", "a string"),
    ({"export": {"formats": ["ply", "gif"]}}, "pipeline.export.formats[1]", "`ply`, `splat`, `glb`"),
    ({"export": {"formats": []}}, "pipeline.export.formats", "1 to 6 items"),
    ({"device": "gpu"}, "pipeline.device", "`cuda:N`"),
    ({"segment": {"size": 128, "object_size": 200}}, "pipeline.segment.object_size", "<= `pipeline.segment.size`"),
    ({"segment": 5}, "pipeline.segment", "a mapping"),
])
def test_errors_name_the_dotted_key(mapping, key, fragment):
    with pytest.raises(SettingsError) as info:
        parse_settings(mapping)
    assert info.value.key == key
    assert str(info.value).startswith(f"`{key}` must be ")
    assert fragment in str(info.value)


def test_every_stage_lists_its_embedded_backend_and_reference_is_complete():
    assert tuple(EMBEDDED_BACKENDS) == STAGE_NAMES
    keys = {row["key"] for row in settings_reference()}
    assert "pipeline.segment.size" in keys and "pipeline.device" in keys
    assert all(row["doc"] for row in settings_reference())


def test_light_modules_do_not_import_torch():
    code = ("import sys, ai_modules, ai_modules.settings, ai_modules.errors, ai_modules.models, "
            "ai_modules.pipeline, ai_modules.records; "
            "bad = [m for m in ('torch', 'numpy', 'cv2', 'glimpsed') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
