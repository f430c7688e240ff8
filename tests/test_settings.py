"""Stage settings from the config, and the methods the config names."""

from pathlib import Path

import pytest
import yaml

from spineflow.measure.settings import DEFAULTS as MEASURE_DEFAULTS
from spineflow.measure.settings import MeasureSettings
from spineflow.register import methods as registration
from spineflow.register.settings import RegisterSettings
from spineflow.segment import methods as segmentation
from spineflow.segment.settings import SegmentSettings
from spineflow.stats.models import Settings

REPO = Path(__file__).resolve().parent.parent


def test_registration_settings_take_the_section_and_its_tuning():
    section = {"method": "rigid_per_vertebra", "sampling_fraction": 0.5, "iterations": 50,
               "tuning": {"yaw_search_deg": 10, "pyramid_shrink": [2, 1],
                          "pyramid_sigma_mm": [1.0, 0.0]}}  # fmt: skip
    settings = RegisterSettings.from_config(section)
    assert (settings.sampling_fraction, settings.iterations) == (0.5, 50)
    assert settings.yaw_search_deg == 10 and settings.pyramid_shrink == (2, 1)
    assert settings.joint_shear_mm == RegisterSettings().joint_shear_mm  # the rest: defaults
    assert section["tuning"]["pyramid_shrink"] == [2, 1]  # the config is not changed


def test_an_unknown_setting_is_an_error_naming_the_section_and_the_key():
    with pytest.raises(ValueError, match=r"registration: unknown setting\(s\) \['yaw_serch_deg'\]"):
        RegisterSettings.from_config({"tuning": {"yaw_serch_deg": 10}})
    with pytest.raises(ValueError, match="measurement.tuning"):
        MeasureSettings.from_config({"endplate_cortex_mm": "auto", "tuning": {"cortex": 1}})
    with pytest.raises(ValueError, match="statistics"):
        Settings.from_config({"alpha_level": 0.01})


def test_measurement_settings_ignore_the_section_s_own_keys():
    section = {"endplate_cortex_mm": 0.4, "tuning": {"converged_mm": 0.25}}
    settings = MeasureSettings.from_config(section)
    assert settings.converged_mm == 0.25 and settings.bone_window_mm == 3.5
    assert settings.refit_reach_mm == settings.bone_window_mm  # follows it
    assert MeasureSettings.from_config(None) == MEASURE_DEFAULTS


def test_the_config_names_a_known_method_or_the_run_stops_with_the_known_ones():
    assert registration.method({}) is registration.rigid_per_vertebra
    assert segmentation.method("external") is segmentation.external
    with pytest.raises(ValueError, match=r"known methods are \['rigid_per_vertebra'\]"):
        registration.method({"method": "syn"})
    with pytest.raises(ValueError, match="segmentation.method 'totalseg'"):
        segmentation.method("totalseg")


def test_the_schema_offers_exactly_the_methods_there_are():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())["properties"]
    assert schema["registration"]["properties"]["method"]["enum"] == sorted(registration.METHODS)
    assert schema["segmentation"]["properties"]["method"]["enum"] == sorted(segmentation.METHODS)


def test_segmentation_settings_take_the_tuning():
    settings = SegmentSettings.from_config(
        {"tuning": {"min_disc_mm": 5.5, "body_core_mm": [3, 12]}}
    )
    assert settings.min_disc_mm == 5.5 and settings.body_core_mm == (3, 12)
    assert SegmentSettings.from_config({"tuning": {}}) == SegmentSettings()
