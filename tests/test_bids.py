"""bids(): the one builder of every BIDS path (entity order, prefixes, folders, wildcards)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spineflow.core.bids import bids, bids_uris, derivatives_root, raw_dataset_link, raw_root


def test_entities_follow_the_specification_order_whatever_the_keyword_order():
    name = bids(
        desc="clean",
        space="ses1",
        mode="image",
        to="ses1",
        from_="ses2",
        acq="pd",
        ses="1",
        sub="01",
        suffix="xfm",
        extension=".txt",
        subject_dir=False,
    )
    assert name == "sub-01_ses-1_acq-pd_from-ses2_to-ses1_mode-image_space-ses1_desc-clean_xfm.txt"


def test_order_is_the_same_for_any_subset_of_entities():
    assert bids(sub="01", desc="x", acq="a", suffix="T2w", subject_dir=False) == (
        "sub-01_acq-a_desc-x_T2w"
    )
    assert bids(space="s", ses="2", suffix="dseg", extension=".nii.gz", subject_dir=False) == (
        "ses-2_space-s_dseg.nii.gz"
    )


@pytest.mark.parametrize("sub", ["01", "sub-01"])
@pytest.mark.parametrize("ses", ["1", "ses-1", 1])
def test_labels_accepted_with_or_without_prefix(sub, ses):
    path = bids("/data", datatype="anat", sub=sub, ses=ses, suffix="T2w", extension=".nii.gz")
    assert Path(path) == Path("/data/sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz")


def test_prefix_is_stripped_only_when_it_is_the_entitys_own():
    # 'ses-' inside a subject label is part of the label, not a prefix to strip
    assert bids(sub="ses-1", suffix="x", subject_dir=False) == "sub-ses-1_x"
    # a label that merely starts with the entity's letters keeps them
    assert bids(sub="subject7", suffix="x", subject_dir=False) == "sub-subject7_x"


def test_datatype_folder_without_session():
    path = bids("root", datatype="anat", sub="07", suffix="T1w", extension=".json")
    assert Path(path) == Path("root/sub-07/anat/sub-07_T1w.json")


def test_no_root_gives_a_relative_path():
    path = bids(datatype="anat", sub="07", ses="2", suffix="T1w")
    assert path == str(Path("sub-07", "ses-2", "anat", "sub-07_ses-2_T1w"))


def test_subject_dir_false_drops_subject_and_session_folders():
    path = bids("logs", sub="01", ses="2", suffix="convert", extension=".log", subject_dir=False)
    assert Path(path) == Path("logs/sub-01_ses-2_convert.log")
    # the datatype folder stays
    path = bids("d", datatype="anat", sub="01", suffix="T2w", subject_dir=False)
    assert Path(path) == Path("d/anat/sub-01_T2w")


def test_group_level_file_without_subject_has_no_subject_folder():
    path = bids("group", desc="discs", suffix="measures", extension=".tsv")
    assert Path(path) == Path("group/desc-discs_measures.tsv")


def test_from_keyword_gives_from_entity():
    name = bids(sub="01", from_="ses2", to="ses1", mode="image", suffix="xfm", subject_dir=False)
    assert name == "sub-01_from-ses2_to-ses1_mode-image_xfm"
    assert "from_" not in name


def test_none_valued_entities_are_left_out():
    assert bids(sub="01", ses=None, acq=None, suffix="T2w", subject_dir=False) == "sub-01_T2w"
    path = bids("r", sub="01", ses=None, datatype="anat", suffix="T2w")
    assert Path(path) == Path("r/sub-01/anat/sub-01_T2w")


@pytest.mark.parametrize("key", ["subject", "session", "foo", "Desc"])
def test_unknown_entity_raises(key):
    with pytest.raises(ValueError, match="unknown BIDS entities"):
        bids(sub="01", suffix="T2w", **{key: "x"})


def test_snakemake_wildcards_pass_through():
    path = bids(
        "out", datatype="anat", sub="{subject}", ses="{session}", suffix="T2w", extension=".nii.gz"
    )
    assert Path(path) == Path(
        "out/sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_T2w.nii.gz"
    )
    # a wildcard behind the prefix passes through too
    assert bids(sub="sub-{subject}", suffix="x", subject_dir=False) == "sub-{subject}_x"


def test_same_entities_same_name():
    a = bids("r", sub="01", ses="1", acq="x", desc="y", suffix="s")
    b = bids("r", desc="y", acq="x", ses="ses-1", sub="sub-01", suffix="s")
    assert a == b


def test_sidecar_sources_are_bids_uris_never_absolute(tmp_path):
    out = tmp_path / "Project_Moreau"
    sidecar = Path(bids(derivatives_root(out), datatype="anat", sub="01", ses="1",
                        suffix="dseg", extension=".json"))  # fmt: skip
    raw_image = bids(raw_root(out), datatype="anat", sub="01", ses="1", suffix="PDw",
                     extension=".nii.gz")  # fmt: skip
    derived = bids(derivatives_root(out), datatype="anat", sub="01", ses="1",
                   desc="preproc", suffix="PDw", extension=".nii.gz")  # fmt: skip
    uris = bids_uris([raw_image, derived, tmp_path / "elsewhere" / "seg.nii.gz"], sidecar)
    assert uris == [
        "bids:raw:sub-01/ses-1/anat/sub-01_ses-1_PDw.nii.gz",
        "bids::sub-01/ses-1/anat/sub-01_ses-1_desc-preproc_PDw.nii.gz",
        "seg.nii.gz",
    ]
    link = raw_dataset_link(out)["raw"]
    assert (derivatives_root(out) / link).resolve() == raw_root(out).resolve()
