"""A synthetic longitudinal cohort: DICOM studies with fake PHI, demographics and ground truth.

Layout written under ``out``::

    dicom/<Last^First_birthdate_ST...>/SE.../IM real MR DICOM in PACS-named studies, a stray file
    participants.tsv                            demographics (participant_id, sex, age, ...)
    sessions.tsv                                weight and date of each visit (BMI change;
                                                which studies are the sessions)
    reads.tsv, adjudication.tsv                 two radiologists' grades and findings
    id_map.tsv                                  dicom_patient_id -> participant_id
    truth/discs.tsv, truth/vertebrae.tsv        geometry from the continuous anatomy
    truth/sessions.tsv                          per scan: pose, SNR, field of view
    truth/phi.tsv                               every identifying string written into DICOM
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.uid import generate_uid

from spineflow_dev.synth import anatomy, reads, render, sampling
from spineflow_dev.synth.dicomio import SeriesInfo, StudyInfo, write_series

FIRST_NAMES = (
    "Anna",
    "Jonas",
    "Marta",
    "Piotr",
    "Sofia",
    "Lukas",
    "Ewa",
    "Tomasz",
    "Clara",
    "Mateo",
    "Ingrid",
    "Karol",
    "Helena",
    "Oskar",
    "Zofia",
    "Emil",
)
LAST_NAMES = (
    "Kowalczyk",
    "Brennan",
    "Lindqvist",
    "Moreau",
    "Novak",
    "Ferreira",
    "Hakala",
    "Duchamp",
    "Ostrowski",
    "Varga",
    "Castellano",
    "Wieczorek",
)
INSTITUTIONS = (
    ("St. Adalbert University Hospital", "12 Wawelska Street, Krakow"),
    ("Northfield Imaging Centre", "4 Harbour Road, Aberdeen"),
)
STUDY_LEVELS = ("L3-L4", "L4-L5", "L5-S1")
STUDY_VERTEBRAE = ("L3", "L4", "L5", "S1")
# patient pose in the scanner (deg about r, a, s): pitch in the sagittal plane is the largest
MAX_ROTATION_DEG = (10.0, 4.0, 4.0)


@dataclass(frozen=True)
class CohortOptions:
    participants: int = 4
    seed: int = 0
    missing_timepoint2_share: float = 3 / 28
    cut_l3l4_share: float = 9 / 56  # of scans: the study had 9 of 53
    snr_range: tuple[float, float] = (10.0, 40.0)
    supersample: int = 4
    workers: int = 2
    # the measured series' contrast, one drawn per participant: "pd_fs" (the study's
    # fat-suppressed PD TSE), "t2" (a T2 TSE without fat suppression, the 1.5 T routine),
    # "stir" (fat nulled by inversion recovery)
    contrasts: tuple[str, ...] = ("pd_fs",)


def generate_cohort(out: str | Path, options: CohortOptions = CohortOptions()) -> Path:
    """Write the cohort; return ``out``. Deterministic for a given seed."""
    out = Path(out)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(options.seed)
    n = options.participants
    order = rng.permutation(n)
    n_missing = max(1, round(n * options.missing_timepoint2_share)) if n >= 3 else 0
    n_cut = max(1, round(n * options.cut_l3l4_share)) if n >= 3 else 0
    missing = set(order[:n_missing].tolist())
    cut = set(order[n_missing : n_missing + n_cut].tolist())
    plans = [
        {
            "index": i,
            "participant_id": f"sub-{i + 1:02d}",
            "seed": int(rng.integers(0, 2**32 - 1)),
            "has_timepoint2": i not in missing,
            "cut_l3l4": i in cut,
            "options": options,
            "out": str(out),
        }
        for i in range(n)
    ]
    with ProcessPoolExecutor(max_workers=max(1, options.workers)) as pool:
        results = list(pool.map(_generate_participant, plans))
    _write_tables(out, results, options.seed)
    return out


# per contrast: tissue signals, the range of the fat signal (how well fat suppression
# worked; None: no fat suppression) and the series as the scanner names it
MEASURED_SERIES = {
    "pd_fs": (render.PD_FS, (0.04, 0.3), SeriesInfo(3, "pd_tse_fs_sag", 3200, 33, "FS")),
    "t2": (render.T2, None, SeriesInfo(3, "t2_tse_sag", 4000, 100, "")),
    "stir": (render.STIR, (0.02, 0.1), SeriesInfo(3, "stir_tse_sag", 4500, 60, "IR")),
}


def _generate_participant(plan: dict) -> dict:
    rng = np.random.default_rng(plan["seed"])
    options: CohortOptions = plan["options"]
    kind = options.contrasts[0]
    if len(options.contrasts) > 1:  # one draw more only then: single-contrast cohorts unchanged
        kind = options.contrasts[int(rng.integers(len(options.contrasts)))]
    base, fat_range, series = MEASURED_SERIES[kind]
    person = _demographics(rng, plan["participant_id"])
    params1 = sampling.sample_participant(rng)
    change = _planted_change(rng)
    sessions = [("ses-1", params1, 0)]
    if plan["has_timepoint2"]:
        params2 = sampling.timepoint2_params(rng, params1, change)
        sessions.append(("ses-2", params2, int(rng.integers(133, 147))))  # ~20 weeks
    cut_session = int(rng.integers(0, len(sessions))) if plan["cut_l3l4"] else -1
    protocol = _protocol(rng)
    first_day = date(2025, 1, 6) + timedelta(days=int(rng.integers(0, 300)))
    disc_rows, vertebra_rows, scan_rows, visit_rows = [], [], [], []
    phi = _phi_of_person(person)
    body_seed = int(rng.integers(2**63))  # the same body around the spine at every visit
    for k, (session_id, params, day) in enumerate(sessions):
        spine = anatomy.build_spine(params)
        snr = rng.uniform(*options.snr_range)
        scene = sampling.sample_scene(rng, spine, snr, np.random.default_rng(body_seed))
        contrast = sampling.sample_contrast(rng, base, fat_range=fat_range)
        rotation, translation, geometry, fov = _place_scan(rng, spine, k == cut_session, protocol)
        # the SNR is that of L4's marrow as received, under the bias field
        l4 = spine.vertebra("L4")
        field = render.bias_field(_to_scanner(l4.centre_as, rotation, translation)[None], scene)
        scene["noise_sigma"] *= float(field[0])
        _write_anatomy(Path(plan["out"]), plan["participant_id"], session_id, params, fov)
        study_day = first_day + timedelta(days=day)
        study = _study_info(rng, person, study_day)
        phi += [study.accession, study.study_date]
        # as PACS exports name studies: the patient's name and birth date, which must not
        # reach any output
        study_name = f"{person['name']}_{person['birth_date']}_ST{rng.integers(0, 16**5):05X}"
        folder = Path(plan["out"]) / "dicom" / study_name
        _write_study(
            folder,
            spine,
            scene,
            contrast,
            rotation,
            translation,
            geometry,
            study,
            rng,
            options.supersample,
            series,
        )
        statuses = _fov_status(spine, rotation, translation, geometry)
        common = {"participant_id": plan["participant_id"], "session_id": session_id}
        visit_rows.append({**common, "visit_date": study_day.isoformat()})
        for level in STUDY_LEVELS:
            disc = spine.disc(level)
            disc_rows.append(
                {
                    **common,
                    "level": level,
                    "height_mm": anatomy.true_disc_height_mm(disc),
                    "width_mm": anatomy.true_disc_width_mm(disc),
                    "pfirrmann": disc.pfirrmann,
                    "status": statuses[level],
                    "planted_change_mm": change.get(level, 0.0) if session_id == "ses-2" else 0.0,
                    "centre_scanner_ras": json.dumps(
                        _to_scanner(disc.mid_origin_as, rotation, translation, disc.centre_r)
                        .round(3)
                        .tolist()
                    ),
                }
            )
        for name in STUDY_VERTEBRAE:
            vertebra_rows.append(
                {
                    **common,
                    "vertebra": name,
                    "intervertebral_distance_mm": anatomy.true_intervertebral_distance_mm(
                        spine.vertebra(name)
                    ),
                    "status": statuses[name],
                }
            )
        scan_rows.append(
            {
                **common,
                "snr": round(snr, 2),
                "lordosis_deg": round(params["lordosis_deg"], 2),
                "rotation_deg": json.dumps(np.round(fov["rotation_deg"], 3).tolist()),
                "translation_mm": json.dumps(np.round(fov["translation_mm"], 3).tolist()),
                "midline_offset_mm": round(fov["midline_offset_mm"], 3),
                "n_slices": len(geometry.slice_centres),
                "fov_mm": round(protocol.fov_mm, 1),
                "pixel_mm": round(protocol.pixel_mm, 4),
                "slice_spacing_mm": round(protocol.thickness_mm + protocol.gap_mm, 3),
                "cortex_mm": round(params["cortex_mm"], 3),
                "bias_ap_gradient": round(scene["bias"]["ap_gradient"], 3),
                "fat_signal": round(contrast["fat"], 3),
                "fov_top_cuts": fov["top_cuts"],
            }
        )
    return {
        "person": person,
        "discs": disc_rows,
        "vertebrae": vertebra_rows,
        "scans": scan_rows,
        "visits": visit_rows,
        "phi": phi,
    }


def _planted_change(rng) -> dict:
    """Half of the participants lose (or gain) disc height at some levels; the rest: none."""
    if rng.uniform() < 0.5:
        return {}
    return {lvl: float(rng.choice([-0.5, -0.4, -0.3, -0.2, 0.0, 0.2])) for lvl in STUDY_LEVELS}


def _demographics(rng, participant_id) -> dict:
    sex = rng.choice(["F", "M"])
    height_cm = rng.normal(178 if sex == "M" else 166, 7)
    bmi = rng.uniform(19, 31)
    finisher = rng.uniform() < 0.7
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    birth = date(1965, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 35)))
    institution, address = INSTITUTIONS[int(rng.integers(0, len(INSTITUTIONS)))]
    return {
        "participant_id": participant_id,
        "sex": str(sex),
        "age": int((date(2025, 6, 1) - birth).days // 365),
        "height_cm": round(float(height_cm), 1),
        "weight_kg": round(float(bmi * (height_cm / 100) ** 2), 1),
        "group": "finisher" if finisher else "non-finisher",
        "finish_time_min": round(float(rng.normal(285, 40)), 1) if finisher else None,
        "name": f"{last}^{first}",
        "patient_id": f"HSP{rng.integers(10**6, 10**7)}",
        "birth_date": birth.strftime("%Y%m%d"),
        "institution": institution,
        "institution_address": address,
        "referring_physician": f"{rng.choice(LAST_NAMES)}^{rng.choice(FIRST_NAMES)}^^Dr",
        "operator": f"{rng.choice(LAST_NAMES)}^{rng.choice(FIRST_NAMES)}",
    }


def _phi_of_person(person: dict) -> list[str]:
    """Every identifying string this person's DICOM carries, in the spellings a leak would use."""
    last, first = person["name"].split("^")
    physicians = [person["referring_physician"], person["operator"]]
    return [
        person["name"],
        f"{first} {last}",
        f"{last} {first}",
        person["patient_id"],
        person["birth_date"],
        person["institution"],
        person["institution_address"],
        *physicians,
        *(p.split("^")[0] for p in physicians),
    ]


def _study_info(rng, person, day: date) -> StudyInfo:
    return StudyInfo(
        patient_name=person["name"],
        patient_id=person["patient_id"],
        birth_date=person["birth_date"],
        sex=person["sex"],
        accession=f"ACC{rng.integers(10**7, 10**8)}",
        institution=person["institution"],
        institution_address=person["institution_address"],
        referring_physician=person["referring_physician"],
        operator=person["operator"],
        study_date=day.strftime("%Y%m%d"),
        study_time=f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}00",
        study_uid=generate_uid(),
        frame_of_reference_uid=generate_uid(),
    )


def _to_scanner(point_as, rotation, translation, r_mm: float = 0.0) -> np.ndarray:
    point = np.array([r_mm, point_as[0], point_as[1]])
    return render.anatomy_to_scanner(point[None, :], rotation, translation)[0]


def anatomy_path(out: Path, participant_id: str, session_id: str) -> Path:
    return Path(out) / "truth" / "anatomy" / f"{participant_id}_{session_id}.json"


def _write_anatomy(out: Path, participant_id, session_id, params: dict, fov: dict) -> None:
    """What rebuilds this scan's anatomy and pose (truth label maps on any grid)."""
    record = {
        "params": params,
        "rotation_deg": np.asarray(fov["rotation_deg"]).tolist(),
        "translation_mm": np.asarray(fov["translation_mm"]).tolist(),
    }
    path = anatomy_path(out, participant_id, session_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, default=float))


def truth_label_map(out: Path, participant_id: str, session_id: str, reference_nifti):
    """Truth labels (SPINEPS values) on the grid of a NIfTI image of that scan, as nibabel."""
    import nibabel as nib

    record = json.loads(anatomy_path(out, participant_id, session_id).read_text())
    spine = anatomy.build_spine(record["params"])
    rotation, translation = render.pose_matrix(record["rotation_deg"], record["translation_mm"])
    reference = nib.load(str(reference_nifti))
    ijk = np.indices(reference.shape[:3]).reshape(3, -1).T
    scanner = nib.affines.apply_affine(reference.affine, ijk)
    anat = render.scanner_to_anatomy(scanner, rotation, translation)
    labels = render.structure_labels(spine, anat[:, 0], anat[:, 1], anat[:, 2])
    return nib.Nifti1Image(labels.reshape(reference.shape[:3]), reference.affine)


@dataclass(frozen=True)
class Protocol:
    """A participant's sagittal protocol (the same at both visits)."""

    fov_mm: float
    matrix: int
    thickness_mm: float
    gap_mm: float
    n_slices: int

    @property
    def pixel_mm(self) -> float:
        return self.fov_mm / self.matrix


STUDY_PROTOCOL = Protocol(sampling.FOV_MM, sampling.MATRIX, 3.0, 0.3, 17)


def _protocol(rng) -> Protocol:
    """Half the cohort on the study's protocol, half on others: fields of view from little
    more than L3-S1 to the thoracolumbar junction, other pixels, slices and gaps."""
    if rng.uniform() < 0.5:
        return replace(STUDY_PROTOCOL, n_slices=int(rng.integers(15, 20)))
    fov_mm = rng.uniform(200, 380)
    matrix = 2 * int(round(fov_mm / rng.uniform(0.85, 1.25) / 2))
    thickness_mm, gap_mm = rng.uniform(3.0, 4.0), rng.uniform(0.0, 0.8)
    n_slices = int(np.ceil(2 * rng.uniform(25, 32) / (thickness_mm + gap_mm))) | 1
    return Protocol(fov_mm, matrix, thickness_mm, gap_mm, n_slices)


def _sagittal_geometry(rng, protocol: Protocol) -> tuple[render.SliceGeometry, float]:
    spacing = protocol.thickness_mm + protocol.gap_mm
    offset = rng.uniform(-spacing / 2, spacing / 2)  # where the midline falls between slices
    r = offset + (np.arange(protocol.n_slices) - (protocol.n_slices - 1) / 2) * spacing
    centres = np.stack([r, np.zeros_like(r), np.zeros_like(r)], axis=1)
    geometry = render.SliceGeometry(
        rows=protocol.matrix,
        cols=protocol.matrix,
        pixel_mm=protocol.pixel_mm,
        thickness_mm=protocol.thickness_mm,
        slice_centres=centres,
        row_dir=np.array([0.0, -1.0, 0.0]),  # columns run anterior -> posterior
        col_dir=np.array([0.0, 0.0, -1.0]),  # rows run superior -> inferior
    )
    return geometry, offset


def _rim_points(vertebra, surface: str) -> np.ndarray:
    """(r, a, s) points of one endplate across its AP extent in the body's mid-sagittal plane."""
    points_as = vertebra.rim_points_as(surface)
    return np.column_stack([np.full(len(points_as), vertebra.centre_r), points_as])


def _endplate_rims(spine) -> dict[str, np.ndarray]:
    """Mid-sagittal rim points that decide whether each study structure is in the field."""
    rims = {}
    for name in STUDY_VERTEBRAE:
        v = spine.vertebra(name)
        rims[name] = np.vstack([_rim_points(v, "cranial"), _rim_points(v, "caudal")])
    for level in STUDY_LEVELS:
        d = spine.disc(level)
        rims[level] = np.vstack([_rim_points(d.upper, "caudal"), _rim_points(d.lower, "cranial")])
    return rims


def _inplane_margin_mm(points_ras, rotation, translation, geometry) -> np.ndarray:
    """Signed distance of each point inside the image rectangle (negative: outside)."""
    scanner = render.anatomy_to_scanner(points_ras, rotation, translation)
    half = geometry.pixel_mm * geometry.rows / 2
    return np.minimum(half - np.abs(scanner[:, 1]), half - np.abs(scanner[:, 2]))


def _fov_status(spine, rotation, translation, geometry) -> dict[str, str]:
    statuses = {}
    for name, rims in _endplate_rims(spine).items():
        inside = _inplane_margin_mm(rims, rotation, translation, geometry).min() > 0
        statuses[name] = "ok" if inside else "not_in_fov"
    return statuses


def _place_scan(rng, spine, cut_l3l4: bool, protocol: Protocol):
    """Pose the patient and the field of view; with cut_l3l4 the top edge cuts L3 or L3-L4,
    otherwise L3 to S1 lie whole inside it, anywhere in a field that may reach far beyond.

    Edges closer than 3 mm to a deciding endplate are redrawn so the truth is unambiguous.
    """
    half = protocol.fov_mm / 2
    l3, l4, s1 = (spine.vertebra(n) for n in ("L3", "L4", "S1"))
    top_s = l3.rim_points_as("cranial")[:, 1].max()
    bottom_s = s1.rim_points_as("caudal")[:, 1].min()
    for _ in range(400):
        geometry, offset = _sagittal_geometry(rng, protocol)
        rotation_deg, shift = sampling.sample_pose(rng, MAX_ROTATION_DEG, 8.0)
        rotation, _ = render.pose_matrix(rotation_deg, (0, 0, 0))
        if cut_l3l4:
            target_s = rng.uniform(l4.centre_as[1], l3.centre_as[1]) - half
        else:
            low, high = top_s + 8 - half, bottom_s - 8 + half
            target_s = rng.uniform(low, high) if low < high else (low + high) / 2
        target = np.array([spine.midline_r(target_s), l4.centre_as[0] - rng.uniform(30, 60),
                           target_s])  # fmt: skip
        translation = -(rotation @ target) + shift
        margins = [
            _inplane_margin_mm(rims, rotation, translation, geometry)
            for rims in _endplate_rims(spine).values()
        ]
        ambiguous = any(((m > -3) & (m < 3)).any() for m in margins)
        whole = cut_l3l4 or all((m > 0).all() for m in margins)
        if whole and not ambiguous:
            fov = {
                "rotation_deg": rotation_deg,
                "translation_mm": translation,
                "midline_offset_mm": -offset,
                "top_cuts": cut_l3l4,
            }
            return rotation, translation, geometry, fov
    raise RuntimeError("could not place an unambiguous field of view")


def _write_study(folder, spine, scene, contrast, rotation, translation, geometry, study, rng, ss,
                 series: SeriesInfo):  # fmt: skip
    """The measured sagittal series (PD-FS or T2) plus decoys: a 3-plane localizer, a sagittal
    T1 and an axial T2 that a careless series selection would pick."""
    localizer_uid = generate_uid()
    for k, geom in enumerate(_localizer_geometries()):
        image = render.render_volume(spine, scene, geom, rotation, translation, contrast, rng, 1, 1)
        write_series(
            folder / "SE001",
            image,
            geom,
            study,
            SeriesInfo(1, "localizer_3plane", 8.6, 4.0, ""),
            rng,
            series_uid=localizer_uid,
            first_instance=k + 1,
        )
    t1 = render.render_volume(
        spine,
        scene,
        geometry,
        rotation,
        translation,
        sampling.sample_contrast(rng, render.T1),
        rng,
        1,
        1,
    )
    write_series(
        folder / "SE002", t1, geometry, study, SeriesInfo(2, "t1_tse_sag", 650, 9.8, ""), rng
    )
    measured = render.render_volume(
        spine, scene, geometry, rotation, translation, contrast, rng, ss
    )
    write_series(
        folder / "SE003",
        measured,
        geometry,
        study,
        series,
        rng,
    )
    axial = _axial_geometry(spine, rotation, translation)
    t2_ax = render.render_volume(spine, scene, axial, rotation, translation, contrast, rng, 1, 1)
    write_series(
        folder / "SE004", t2_ax, axial, study, SeriesInfo(4, "t2_tse_tra", 4000, 96, ""), rng
    )
    (folder / "Thumbs.db").write_bytes(b"not a DICOM file\x00")


def _localizer_geometries() -> list[render.SliceGeometry]:
    """One sagittal, one coronal and one axial image in a single series, as scanners do."""
    size, pixel = 128, 400 / 128
    planes = [
        (np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, -1.0])),
        (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])),
        (np.array([1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])),
    ]
    return [
        render.SliceGeometry(size, size, pixel, 8.0, np.zeros((1, 3)), row, col)
        for row, col in planes
    ]


def _axial_geometry(spine, rotation, translation) -> render.SliceGeometry:
    disc = spine.disc("L4-L5")
    centre = _to_scanner(disc.mid_origin_as, rotation, translation, disc.centre_r)
    offsets = (np.arange(5) - 2) * 4.4
    centres = centre + np.outer(offsets, [0, 0, 1.0])
    return render.SliceGeometry(
        256, 256, 200 / 256, 4.0, centres, np.array([1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])
    )


def _write_tables(out: Path, results: list[dict], seed: int) -> None:
    people = pd.DataFrame([r["person"] for r in results])
    columns = ["participant_id", "sex", "age", "height_cm", "weight_kg", "group", "finish_time_min"]
    people[columns].to_csv(out / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    people.rename(columns={"patient_id": "dicom_patient_id"})[
        ["dicom_patient_id", "participant_id"]
    ].to_csv(out / "id_map.tsv", sep="\t", index=False)
    for table in ("discs", "vertebrae", "scans"):
        rows = [row for r in results for row in r[table]]
        name = "sessions" if table == "scans" else table
        pd.DataFrame(rows).to_csv(
            out / "truth" / f"{name}.tsv", sep="\t", index=False, float_format="%.4f"
        )
    truth_discs = pd.DataFrame([row for r in results for row in r["discs"]])
    visits = pd.DataFrame([row for r in results for row in r["visits"]])
    reads.write(out, people, truth_discs, visits, seed)
    phi = sorted({s for r in results for s in r["phi"]})
    pd.DataFrame({"phi": phi}).to_csv(out / "truth" / "phi.tsv", sep="\t", index=False)
