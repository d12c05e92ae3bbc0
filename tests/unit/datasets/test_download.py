"""``neurodecode download``: listings, selections, verification, resume, terms, against fake hosts on 127.0.0.1.

The fake hosts (``tests/_fake_hosts.py``) serve simulator-written files in each dataset's real hosting
layout: NSD in its S3 bucket, THINGS-EEG2 as OSF zips per subject (and the ATM variant on a Hugging Face
tree), THINGS-MEG in OpenNeuro's bucket, MEG-MASC spread over three OSF projects.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _fake_hosts import FakeHosts, publish

from neurodecode.datasets import download, simulate
from neurodecode.io.fetch import (
    MANIFEST_NAME,
    DownloadError,
    RemoteFile,
    fetch_files,
    list_hf,
    list_osf,
    list_s3,
    parse_s3_listing,
)

NSD_BETAS = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
NSD_RESP = "nsddata/ppdata/subj01/behav/responses.tsv"
SIM_ONLY = ("simulation", "coco/")  # simulator records, not part of any host


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tree(folder: Path, sub: str = "") -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    publish(out, folder / sub if sub else folder, skip=lambda rel: rel.startswith(SIM_ONLY))
    return out


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    base = tmp_path_factory.mktemp("sims")
    kw = {"seed": 0, "verbose": "warning"}
    simulate("nsd", base / "nsd", n_subjects=1, n_sessions=2, trials_per_session=30, image_size=16,
             grid=[(12, 12, 12)], formats=("hdf5", "nii.gz"), **kw)
    simulate("things_eeg2", base / "eeg2", n_subjects=1, n_train_concepts=2, images_per_concept=2,
             n_test_concepts=2, n_train_reps=2, n_test_reps=2, image_size=16, variant="both", **kw)
    simulate("things_meg", base / "meg", n_subjects=1, n_train_concepts=2, images_per_concept=2,
             n_test_concepts=2, n_test_reps=2, n_channels=16, sfreq=100.0, n_sessions=1, image_size=16, **kw)
    simulate("masc", base / "masc", n_subjects=1, n_sessions=1, n_stories=1, story_duration_s=20.0,
             n_channels=16, **kw)
    return base


@pytest.fixture(scope="module")
def hosts(sims):
    with pytest.MonkeyPatch.context() as mp, FakeHosts() as h:
        for var in ("NO_PROXY", "no_proxy"):  # 127.0.0.1 never through a proxy of the environment
            mp.setenv(var, "127.0.0.1,localhost")
        _serve_nsd(h, sims / "nsd")
        _serve_eeg2(h, sims / "eeg2")
        _serve_meg(h, sims / "meg")
        _serve_masc(h, sims / "masc")
        yield h


def _serve_nsd(h: FakeHosts, sim: Path) -> None:
    h.s3["natural-scenes-dataset"] = _tree(sim)
    captions = io.BytesIO()
    np.save(captions, np.array([["a cat", "", "", "", ""]] * 4))
    h.hf["pscotti/naturalscenesdataset"] = {"COCO_73k_annots_curated.npy": captions.getvalue(),
                                            "README.md": b"# NSD helpers\n", "subj01/other.npy": b"x"}


def _serve_eeg2(h: FakeHosts, sim: Path) -> None:
    prep = _tree(sim, "eeg_dataset/preprocessed_data/sub-01")
    h.osf["anp5v"] = {"sub-01.zip": _zip({f"sub-01/{k}": v for k, v in prep.items()}),
                      "sub-02.zip": _zip({f"sub-02/{k}": v[::-1] for k, v in prep.items()})}
    h.osf["crxs4"] = {"sub-01.zip": _zip({"sub-01/ses-01/raw_eeg_training.npy": b"raw1",
                                          "sub-01/ses-02/raw_eeg_test.npy": b"raw2"}),
                      "sub-03.zip": _zip({"sub-03/ses-01/raw_eeg_test.npy": b"raw3"})}
    images = sim / "image_set"
    h.osf["y63gw"] = {
        "image_metadata.npy": (images / "image_metadata.npy").read_bytes(),
        "training_images.zip": _zip({f"training_images/{k}": v for k, v in _tree(images, "training_images").items()}),
        "test_images.zip": _zip(_tree(images, "test_images")),  # no top folder: taken as it is
        "README.txt": b"THINGS-EEG2 image set\n"}
    atm = {f"Preprocessed_data_250Hz/sub-01/{k}": v for k, v in _tree(sim, "Preprocessed_data_250Hz/sub-01").items()}
    atm["Preprocessed_data_250Hz/sub-02/preprocessed_eeg_test.npy"] = b"other subject"
    atm["ATM_S_checkpoint.pt"] = b"weights"
    h.hf["LidongYang/EEG_Image_decode"] = atm


def _serve_meg(h: FakeHosts, sim: Path) -> None:
    files = {"ds004212/" + k: v for k, v in _tree(sim).items() if not k.startswith("images/")}
    raw = "ds004212/sub-BIGMEG{s}/ses-{ses:02d}/meg/sub-BIGMEG{s}_ses-{ses:02d}_task-main_run-01_meg.ds/x.meg4"
    for s in (1, 2):
        for ses in (1, 2):
            files[raw.format(s=s, ses=ses)] = f"ctf {s} {ses}".encode()
        files[f"ds004212/sub-BIGMEG{s}/anat/sub-BIGMEG{s}_T1w.nii.gz"] = b"anat"
    files["ds004212/derivatives/preprocessed/preprocessed_P2-epo.fif"] = b"P2 epochs"
    files["ds004212/sourcedata/sample_attributes_P2.csv"] = b"trial_type\n"
    files["ds004212/dataset_description.json"] = b'{"Name": "THINGS-MEG"}'
    files["ds004212/participants.tsv"] = b"participant_id\nsub-BIGMEG1\n"
    h.s3["openneuro.org"] = files


def _serve_masc(h: FakeHosts, sim: Path) -> None:
    tree = _tree(sim)
    h.osf["ag3kj"] = {"bids_anonym/" + k: v for k, v in tree.items() if not k.startswith("stimuli/")}
    h.osf["h2tzn"] = {k: v for k, v in tree.items() if k.startswith("stimuli/")}
    h.osf["u5327"] = {"participants.tsv": b"a later copy\n",
                      "sub-02/ses-0/meg/sub-02_ses-0_task-0_meg.fif": b"sub2 ses0",
                      "sub-02/ses-1/meg/sub-02_ses-1_task-0_meg.fif": b"sub2 ses1",
                      "derivatives/something.txt": b"not part of the BIDS data"}


@pytest.fixture(autouse=True)
def _clean_hosts(hosts):
    hosts.faults.clear()
    hosts.requests.clear()
    yield
    hosts.faults.clear()


@pytest.fixture
def terms(tmp_path, monkeypatch):
    """A fresh config folder (no NSD terms accepted yet)."""
    cfg = tmp_path / "cfg"
    monkeypatch.setenv("NEURODECODE_CONFIG", str(cfg / "config.json"))
    return cfg / "nsd_terms_accepted.json"


def _same_tree(root: Path, expected: dict[str, bytes]) -> None:
    """``root`` holds exactly ``expected`` (besides the download record), byte for byte."""
    found = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    found.pop(MANIFEST_NAME, None)
    assert sorted(found) == sorted(expected)
    for k, v in expected.items():
        assert hashlib.sha256(found[k]).hexdigest() == hashlib.sha256(v).hexdigest(), k


def _nsd(root, hosts, **kw):
    kw.setdefault("backoff", 0.01)
    return download("nsd", root, base_url=hosts.mirror(), **kw)


# -- listings ------------------------------------------------------------------------------------------------


def test_s3_listing_parses_pages_and_tells_md5_from_multipart_etags(hosts, sims):
    files = list_s3(hosts.mirror()["s3"], "nsddata/ppdata/subj01/func1pt8mm/roi/")
    assert len(files) == 12 > 3  # twelve ROI volumes, served three per page
    sizes = {f.path: f.size for f in files}
    roi = sims / "nsd" / "nsddata/ppdata/subj01/func1pt8mm/roi"
    assert sizes == {f"nsddata/ppdata/subj01/func1pt8mm/roi/{p.name}": p.stat().st_size for p in roi.iterdir()}
    small = next(f for f in files if f.path.endswith("/nsdgeneral.nii.gz"))
    assert small.hash == "md5:" + hashlib.md5((roi / "nsdgeneral.nii.gz").read_bytes()).hexdigest()
    big = list_s3(hosts.mirror()["s3"], f"{NSD_BETAS}/betas_session01.hdf5")
    assert [f.hash for f in big] == [None] and big[0].size > hosts.multipart_bytes  # "-2" ETag: size only
    xml = (b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>true</IsTruncated>'
           b"<NextContinuationToken>tok</NextContinuationToken><Contents><Key>a/b</Key><ETag>&quot;"
           b"0123456789abcdef0123456789abcdef&quot;</ETag><Size>7</Size></Contents></ListBucketResult>")
    assert parse_s3_listing(xml) == ([{"key": "a/b", "size": 7, "etag": "0123456789abcdef0123456789abcdef"}], "tok")


def test_osf_listing_follows_folders_and_pages_and_reads_hashes(hosts):
    files = list_osf("ag3kj", api_url=hosts.mirror()["osf"])
    expected = sorted(hosts.osf["ag3kj"])
    assert [f.path for f in files] == expected and len(expected) > 3
    for f in files:
        assert f.hash == "sha256:" + hashlib.sha256(hosts.osf["ag3kj"][f.path]).hexdigest()
        assert f.size == len(hosts.osf["ag3kj"][f.path])
    pruned = list_osf("ag3kj", api_url=hosts.mirror()["osf"], keep_folder=lambda p: "sub-" not in p)
    assert pruned and all("/sub-" not in "/" + f.path for f in pruned)


def test_hf_listing_follows_link_pages_and_reads_lfs_sha256(hosts):
    files = list_hf("LidongYang/EEG_Image_decode", endpoint=hosts.mirror()["hf"])
    repo = hosts.hf["LidongYang/EEG_Image_decode"]
    assert [f.path for f in files] == sorted(repo) and len(repo) > 3
    npy = next(f for f in files if f.path.endswith("preprocessed_eeg_training.npy"))
    assert npy.hash == "sha256:" + hashlib.sha256(repo[npy.path]).hexdigest()
    assert next(f for f in files if f.path.endswith(".pt")).hash is None  # not LFS: size only
    sub = list_hf("LidongYang/EEG_Image_decode", "Preprocessed_data_250Hz/sub-02", endpoint=hosts.mirror()["hf"])
    assert [f.path for f in sub] == ["Preprocessed_data_250Hz/sub-02/preprocessed_eeg_test.npy"]


# -- NSD: dry run, selections, terms -------------------------------------------------------------------------


def test_nsd_dry_run_lists_every_file_and_the_total_and_writes_nothing(hosts, sims, tmp_path, terms):
    root = tmp_path / "nsd"
    report = _nsd(root, hosts, dry_run=True)
    served = hosts.s3["natural-scenes-dataset"]
    expected = {k for k in served if not k.endswith(".nii.gz") or "betas_session" not in k}  # hdf5 betas
    assert {f.path for f in report.files} == expected
    assert report.total_size == sum(len(served[k]) for k in expected)
    assert report.dry_run and report.present == [] and "dry run" in report.summary()
    assert not root.exists() and not terms.exists()


def test_nsd_selection_picks_exactly_the_asked_files(hosts, tmp_path, terms):
    report = _nsd(tmp_path, hosts, dry_run=True, subjects="1", sessions="2", rois="streams",
                  betas_format="nifti", stimuli=False, captions=True)
    subj = "nsddata/ppdata/subj01"
    assert sorted(f.path for f in report.files) == sorted([
        "COCO_73k_annots_curated.npy",
        "nsddata/experiments/nsd/nsd_expdesign.mat", "nsddata/experiments/nsd/nsd_stim_info_merged.csv",
        "nsddata/freesurfer/subj01/label/streams.mgz.ctab",
        f"{subj}/behav/responses.tsv", f"{subj}/func1pt8mm/brainmask.nii.gz",
        f"{subj}/func1pt8mm/roi/streams.nii.gz", f"{subj}/func1pt8mm/roi/lh.streams.nii.gz",
        f"{subj}/func1pt8mm/roi/rh.streams.nii.gz",
        f"{NSD_BETAS}/betas_session02.nii.gz", f"{NSD_BETAS}/ncsnr.nii.gz"])
    caption = next(f for f in report.files if f.path == "COCO_73k_annots_curated.npy")
    assert caption.url.startswith(hosts.mirror()["hf"] + "/datasets/pscotti/naturalscenesdataset/resolve/main/")


def test_nsd_refuses_without_the_terms_and_records_them_once(hosts, sims, tmp_path, terms):
    root = tmp_path / "nsd"
    with pytest.raises(PermissionError) as err:
        _nsd(root, hosts, stimuli=False)
    msg = str(err.value)
    assert "cvnlab.slite.page" in msg and "--accept-nsd-terms" in msg and "docs.google.com/forms" in msg
    assert not terms.exists() and not root.exists()
    _nsd(root, hosts, stimuli=False, rois="nsdgeneral", sessions=1, accept_terms=True)
    record = terms.read_text()
    assert json.loads(record)["accepted"] is True and json.loads(record)["terms"].startswith("https://cvnlab")
    stamp = terms.stat().st_mtime_ns
    _nsd(root, hosts, stimuli=False, rois="nsdgeneral", sessions=1, accept_terms=True)  # recorded once
    assert terms.read_text() == record and terms.stat().st_mtime_ns == stamp
    report = _nsd(root, hosts, stimuli=False, rois="nsdgeneral", sessions=1)  # no flag needed any more
    assert report.downloaded == [] and len(report.skipped) == len(report.files)


def test_nsd_download_is_complete_and_a_second_run_downloads_nothing(hosts, sims, tmp_path, terms):
    root = tmp_path / "nsd"
    report = _nsd(root, hosts, betas_format="nifti", accept_terms=True, jobs=3)
    served = hosts.s3["natural-scenes-dataset"]
    expected = {k: v for k, v in served.items() if not k.endswith(".hdf5") or "betas_session" not in k}
    _same_tree(root, expected)
    assert sorted(report.downloaded) == sorted(expected) and report.n_bytes == sum(map(len, expected.values()))
    n_requests = len(hosts.requests)
    again = _nsd(root, hosts, betas_format="nifti")
    assert again.downloaded == [] and sorted(again.skipped) == sorted(expected)
    assert all("list-type" in p for p, _ in hosts.requests[n_requests:])  # listings only, no file fetched
    record = json.loads((root / MANIFEST_NAME).read_text())["files"]
    assert set(record) == set(expected) and record[NSD_RESP]["size"] == len(served[NSD_RESP])


# -- faults: drops, corruption, wrong sizes, interruptions ------------------------------------------------------


def test_a_dropped_connection_resumes_with_range_and_completes(hosts, sims, tmp_path, terms):
    key = f"{NSD_BETAS}/betas_session01.hdf5"
    hosts.fault("s3", key, "drop", times=3)
    _nsd(tmp_path, hosts, rois="nsdgeneral", sessions=1, stimuli=False, accept_terms=True)
    assert (tmp_path / key).read_bytes() == hosts.s3["natural-scenes-dataset"][key]
    ranges = hosts.ranged("s3", key)
    assert ranges[0] is None and len(ranges) == 4
    assert all(r is not None and int(r.split("=")[1].rstrip("-")) > 0 for r in ranges[1:])
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob(".*.lock"))


def test_corrupt_bytes_once_are_caught_by_the_checksum_and_downloaded_again(hosts, tmp_path, terms):
    hosts.fault("s3", NSD_RESP, "corrupt", times=1)
    _nsd(tmp_path, hosts, rois="nsdgeneral", sessions=1, stimuli=False, accept_terms=True)
    assert (tmp_path / NSD_RESP).read_bytes() == hosts.s3["natural-scenes-dataset"][NSD_RESP]
    assert len(hosts.ranged("s3", NSD_RESP)) == 2


def test_always_corrupt_bytes_end_in_a_clear_error_and_no_file(hosts, tmp_path, terms):
    hosts.fault("s3", NSD_RESP, "corrupt", times=None)
    try:
        with pytest.raises(DownloadError) as err:
            _nsd(tmp_path, hosts, rois="nsdgeneral", sessions=1, stimuli=False, accept_terms=True)
    finally:
        hosts.faults.clear()
    msg = str(err.value)
    assert NSD_RESP in msg and "/s3/natural-scenes-dataset/" + NSD_RESP in msg and "MD5" in msg
    assert not (tmp_path / NSD_RESP).exists()
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("tmp*"))
    assert (tmp_path / NSD_BETAS / "betas_session01.hdf5").is_file()  # the other files were completed


@pytest.mark.parametrize("mode", ["short", "long"])
def test_a_wrong_size_ends_in_a_clear_error_and_no_truncated_file(hosts, tmp_path, terms, mode):
    key = f"{NSD_BETAS}/betas_session01.hdf5"  # a multipart ETag: checked by its size
    hosts.fault("s3", key, mode, times=None)
    try:
        with pytest.raises(DownloadError) as err:
            _nsd(tmp_path, hosts, rois="nsdgeneral", sessions=1, stimuli=False, accept_terms=True)
    finally:
        hosts.faults.clear()
    assert key in str(err.value) and str(len(hosts.s3["natural-scenes-dataset"][key])) in str(err.value)
    assert not (tmp_path / key).exists() and not list(tmp_path.rglob("*.part"))


def test_an_interrupted_download_resumes_from_its_part_file_by_range(hosts, tmp_path, terms):
    key = f"{NSD_BETAS}/betas_session02.hdf5"
    data = hosts.s3["natural-scenes-dataset"][key]
    part = tmp_path / (key + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:70_001])
    _nsd(tmp_path, hosts, rois="nsdgeneral", sessions=2, stimuli=False, accept_terms=True)
    assert hosts.ranged("s3", key) == ["bytes=70001-"]
    assert (tmp_path / key).read_bytes() == data and not part.exists()


def test_lost_connections_past_the_retries_keep_the_part_for_the_next_run(hosts, tmp_path, terms):
    key = f"{NSD_BETAS}/betas_session01.hdf5"
    hosts.fault("s3", key, "drop", times=None)
    try:
        with pytest.raises(DownloadError) as err:
            _nsd(tmp_path, hosts, rois="nsdgeneral", sessions=1, stimuli=False, accept_terms=True, retries=0)
    finally:
        hosts.faults.clear()
    part = tmp_path / (key + ".part")
    assert "run the same command again to resume" in str(err.value) and key in str(err.value)
    assert part.is_file() and 0 < part.stat().st_size < len(hosts.s3["natural-scenes-dataset"][key])
    assert not (tmp_path / key).exists()
    kept = part.stat().st_size
    _nsd(tmp_path, hosts, rois="nsdgeneral", sessions=1, stimuli=False)
    assert hosts.ranged("s3", key)[-1] == f"bytes={kept}-"
    assert (tmp_path / key).read_bytes() == hosts.s3["natural-scenes-dataset"][key] and not part.exists()


def test_a_damaged_file_already_in_place_is_replaced(hosts, tmp_path, terms):
    _nsd(tmp_path, hosts, rois="nsdgeneral", sessions=1, stimuli=False, accept_terms=True)
    good = hosts.s3["natural-scenes-dataset"][NSD_RESP]
    (tmp_path / MANIFEST_NAME).unlink()  # no record: the file is checked against its MD5
    (tmp_path / NSD_RESP).write_bytes(good[:-3] + b"xyz")  # same size, other bytes
    report = _nsd(tmp_path, hosts, rois="nsdgeneral", sessions=1, stimuli=False)
    assert report.downloaded == [NSD_RESP] and (tmp_path / NSD_RESP).read_bytes() == good


def test_two_downloads_into_one_root_at_once_do_not_collide(hosts, tmp_path, terms):
    errors: list[BaseException] = []

    def run():
        try:
            _nsd(tmp_path / "root", hosts, stimuli=False, accept_terms=True)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    served = hosts.s3["natural-scenes-dataset"]
    expected = {k: v for k, v in served.items()
                if not k.startswith("nsddata_stimuli") and not ("betas_session" in k and k.endswith(".nii.gz"))}
    _same_tree(tmp_path / "root", expected)


# -- the other datasets ----------------------------------------------------------------------------------------


def test_things_eeg2_official_zips_are_extracted_into_the_real_layout(hosts, sims, tmp_path):
    from neurodecode.datasets import load_things_eeg2

    report = download("things_eeg2", tmp_path, subjects=1, base_url=hosts.mirror())
    sim = sims / "eeg2"
    expected = {**{f"eeg_dataset/preprocessed_data/sub-01/{k}": v
                   for k, v in _tree(sim, "eeg_dataset/preprocessed_data/sub-01").items()},
                **{f"image_set/{k}": v for k, v in _tree(sim, "image_set").items()}}
    _same_tree(tmp_path, expected)  # zips extracted (one top folder dropped) and removed
    assert sorted(report.downloaded) == ["eeg_dataset/preprocessed_data/sub-01.zip", "image_set/image_metadata.npy",
                                         "image_set/test_images.zip", "image_set/training_images.zip"]
    trials = load_things_eeg2(tmp_path, 1, verbose="warning")
    assert trials.info["variant"] == "official" and len(trials.stimuli) == 6
    again = download("things_eeg2", tmp_path, subjects=1, base_url=hosts.mirror())
    assert again.downloaded == [] and len(again.skipped) == 4


def test_an_archive_left_by_an_interrupted_extraction_is_extracted_without_downloading(hosts, sims, tmp_path):
    archive = tmp_path / "eeg_dataset/preprocessed_data/sub-01.zip"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(hosts.osf["anp5v"]["sub-01.zip"])  # verified against OSF's SHA-256, not fetched
    (archive.parent / "sub-01").mkdir()
    (archive.parent / "sub-01" / "preprocessed_eeg_test.npy").write_bytes(b"half written")
    download("things_eeg2", tmp_path, subjects=1, stimuli=False, base_url=hosts.mirror())
    assert not any(p.endswith("sub-01.zip") for p, _ in hosts.requests) and not archive.exists()
    _same_tree(tmp_path, {f"eeg_dataset/preprocessed_data/sub-01/{k}": v for k, v in
                          _tree(sims / "eeg2", "eeg_dataset/preprocessed_data/sub-01").items()})


def test_things_eeg2_variants_and_selection(hosts, sims, tmp_path):
    atm = download("things_eeg2", tmp_path / "atm", subjects=1, variant="atm", stimuli=False,
                   base_url=hosts.mirror())
    sim = sims / "eeg2" / "Preprocessed_data_250Hz"
    _same_tree(tmp_path / "atm", {f"Preprocessed_data_250Hz/sub-01/{k}": v for k, v in _tree(sim, "sub-01").items()})
    assert all(f.hash and f.hash.startswith("sha256:") for f in atm.files)
    raw = download("things_eeg2", tmp_path / "raw", subjects="1,3", variant="raw", stimuli=False,
                   base_url=hosts.mirror())
    assert sorted(f.path for f in raw.files) == ["eeg_dataset/raw_data/sub-01.zip", "eeg_dataset/raw_data/sub-03.zip"]
    _same_tree(tmp_path / "raw", {"eeg_dataset/raw_data/sub-01/ses-01/raw_eeg_training.npy": b"raw1",
                                  "eeg_dataset/raw_data/sub-01/ses-02/raw_eeg_test.npy": b"raw2",
                                  "eeg_dataset/raw_data/sub-03/ses-01/raw_eeg_test.npy": b"raw3"})
    two = download("things_eeg2", tmp_path / "x", subjects=2, dry_run=True, stimuli=False, base_url=hosts.mirror())
    assert [f.path for f in two.files] == ["eeg_dataset/preprocessed_data/sub-02.zip"]
    with pytest.raises(ValueError, match="no 'sessions' selection"):
        download("things_eeg2", tmp_path, sessions=1, dry_run=True, base_url=hosts.mirror())
    with pytest.raises(ValueError, match="official, atm, raw"):
        download("things_eeg2", tmp_path, variant="fast", dry_run=True, base_url=hosts.mirror())


def test_things_meg_selection_download_and_the_images_instructions(hosts, sims, tmp_path):
    mirror = hosts.mirror("openneuro.org")
    report = download("things_meg", tmp_path, subjects=1, base_url=mirror)
    served = hosts.s3["openneuro.org"]
    expected = {k[len("ds004212/"):]: v for k, v in served.items()
                if k.count("/") == 1 or k.endswith(("_P1-epo.fif", "_P1.csv"))}
    _same_tree(tmp_path, expected)
    assert len(report.notes) == 1 and "https://osf.io/jum2f/" in report.notes[0]
    assert str(tmp_path / "images") in report.notes[0] and "password" in report.notes[0]
    raw = download("things_meg", tmp_path / "raw", subjects="2", sessions="2", variant="raw", dry_run=True,
                   base_url=mirror)
    assert sorted(f.path for f in raw.files) == [
        "dataset_description.json", "participants.tsv", "sourcedata/sample_attributes_P2.csv",
        "sub-BIGMEG2/anat/sub-BIGMEG2_T1w.nii.gz",
        "sub-BIGMEG2/ses-02/meg/sub-BIGMEG2_ses-02_task-main_run-01_meg.ds/x.meg4"]
    with pytest.raises(ValueError, match="no 'rois' selection"):
        download("things_meg", tmp_path, rois="x", dry_run=True, base_url=mirror)


def test_masc_merges_its_osf_parts_into_one_bids_root(hosts, sims, tmp_path):
    report = download("masc", tmp_path, subjects=1, base_url=hosts.mirror())
    _same_tree(tmp_path, _tree(sims / "masc"))  # "bids_anonym/" prefix dropped, stimuli from the 2nd part
    assert (tmp_path / "participants.tsv").read_bytes() != b"a later copy\n"  # the first part's copy wins
    assert len(report.files) == len(_tree(sims / "masc"))
    sel = download("masc", tmp_path / "x", subjects=2, sessions=1, stimuli=False, dry_run=True,
                   base_url=hosts.mirror())
    top = {k for k in _tree(sims / "masc") if "/" not in k}
    assert {f.path for f in sel.files} == top | {"sub-02/ses-1/meg/sub-02_ses-1_task-0_meg.fif"}


# -- options, mirrors, the command line ---------------------------------------------------------------------------


def test_bad_options_are_clear_errors(hosts, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="valid ones are 1..8"):
        download("nsd", tmp_path, subjects=9, dry_run=True)
    with pytest.raises(ValueError, match="ranges like 1-3"):
        download("nsd", tmp_path, sessions="one", dry_run=True)
    with pytest.raises(ValueError, match="hdf5' or 'nifti"):
        download("nsd", tmp_path, betas_format="mat", dry_run=True)
    with pytest.raises(ValueError, match="Unknown host kind 'ftp'"):
        download("nsd", tmp_path, base_url="ftp=http://x", dry_run=True)
    from neurodecode.datasets import DatasetSpec, get_dataset, register_dataset, unregister_dataset

    nsd = get_dataset("nsd")
    register_dataset(DatasetSpec("nodl", "fmri", nsd.loader, nsd.simulator))  # no download source
    try:
        with pytest.raises(ValueError, match="downloadable datasets: nsd, things_eeg2, things_meg, masc"):
            download("nodl", tmp_path, dry_run=True)
    finally:
        unregister_dataset("nodl")
    monkeypatch.delenv("NEURODECODE_NSD_ROOT", raising=False)
    with pytest.raises(ValueError, match="NEURODECODE_NSD_ROOT"):
        download("nsd", dry_run=True)
    monkeypatch.setenv("NEURODECODE_NSD_ROOT", str(tmp_path / "fromenv"))
    report = download("nsd", dry_run=True, stimuli=False, base_url=hosts.mirror()["s3"])  # a URL: the bucket
    assert report.root == tmp_path / "fromenv" and report.files


def test_fetch_files_refuses_paths_outside_the_root_and_zip_slips(hosts, tmp_path):
    with pytest.raises(ValueError, match="relative path inside the root"):
        RemoteFile("../evil", "http://x")
    hosts.osf["slip"] = {"bad.zip": _zip({"../../evil.txt": b"x"})}
    [rf] = list_osf("slip", api_url=hosts.mirror()["osf"])
    from dataclasses import replace

    with pytest.raises(DownloadError, match="outside the target folder"):
        fetch_files([replace(rf, extract_to="out")], tmp_path, progress=False)
    assert not (tmp_path.parent / "evil.txt").exists() and not list(tmp_path.rglob("evil.txt"))


def test_cli_dry_run_lists_files_and_total(hosts, tmp_path, terms, capsys):
    from neurodecode.cli import main

    m = hosts.mirror()
    rc = main(["download", "nsd", "--root", str(tmp_path / "r"), "--dry-run", "--subjects", "1", "--sessions",
               "1-2", "--rois", "nsdgeneral", "--no-stimuli", "--mirror", f"s3={m['s3']}", "-q"])
    out = capsys.readouterr().out
    expected = download("nsd", tmp_path / "r", subjects=1, sessions=[1, 2], rois=["nsdgeneral"], stimuli=False,
                        dry_run=True, base_url=m)
    listed = [line.split()[-1] for line in out.splitlines() if line.startswith("  ")]
    assert rc == 0 and listed == [f.path for f in expected.files] and len(listed) == 11
    assert f"{NSD_BETAS}/betas_session02.hdf5" in listed and "nsd_stimuli.hdf5" not in out
    assert f"total {len(listed)} file(s)" in out and "dry run" in out and not (tmp_path / "r").exists()
    rc = main(["download", "nsd", "--root", str(tmp_path / "r"), "--no-stimuli", "--mirror", m["s3"], "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "--accept-nsd-terms" in err and not (tmp_path / "r").exists()
    rc = main(["download", "nsd", "--root", str(tmp_path / "r"), "--no-stimuli", "--rois", "nsdgeneral",
               "--sessions", "1", "--mirror", m["s3"], "--accept-nsd-terms", "--jobs", "2", "-q"])
    out = capsys.readouterr().out
    served = hosts.s3["natural-scenes-dataset"]
    assert rc == 0 and "downloaded" in out and (tmp_path / "r" / NSD_RESP).read_bytes() == served[NSD_RESP]
    assert "neurodecode fit" in out


def test_an_unreachable_host_says_what_to_check():
    import socket

    from neurodecode.io import fetch

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(fetch.DownloadError, match=rf"127\.0\.0\.1:{port}.*Check the network.*--mirror"):
        fetch._get(f"http://127.0.0.1:{port}/bucket/", retries=0)
