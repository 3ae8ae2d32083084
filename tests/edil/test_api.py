"""EDIL's routes against hostile input: unsigned, malformed, oversized and out-of-bounds jobs, unknown
jobs, and owner-only routes asked by others (docs/security.md, "EDIL")."""

from __future__ import annotations

from r1os.identity import NodeKey
from r1os.wire import sign_request
from tests.edil.network import EdilNet, example


async def test_hostile_input_to_the_job_routes(net: EdilNet) -> None:
    url = net.nodes[0].url
    operator = {"authorization": f"Bearer {net.token(0)}"}
    r = await net.http.post(f"{url}/v1/edil/jobs", json={"spec": example()})
    assert r.status_code == 401
    for body in (b"not json", b"[1]", b'{"spec": 3}', b"{}"):
        r = await net.http.post(f"{url}/v1/edil/jobs", content=body, headers=operator)
        assert r.status_code == 400 and r.json()["cause"] == "bad_request", (body, r.text)
    r = await net.http.post(f"{url}/v1/edil/jobs", content=b"x" * (300 * 1024), headers=operator)
    assert r.status_code == 413
    r = await net.http.post(f"{url}/v1/edil/jobs", json={"spec": example(rounds=5000)}, headers=operator)
    assert r.status_code == 422 and r.json()["cause"] == "bad_spec" and "rounds" in r.json()["error"]
    r = await net.http.post(
        f"{url}/v1/edil/jobs",
        json={
            "spec": example(
                owner_data="path:/etc/secret.npz",
                model={"family": "mlp", "hidden": [32], "features": 64, "classes": 10},
            )
        },
        headers=operator,
    )
    assert r.status_code == 404 and r.json()["cause"] == "data_not_offered", r.text
    assert not net.edil(0).owned  # nothing was started by any of these
    r = await net.http.get(f"{url}/v1/edil/jobs/0123456789abcdef")
    assert r.status_code == 404 and r.json()["cause"] == "no_job"
    for method, path in (("POST", "/v1/edil/jobs/0123456789abcdef/stop"), ("GET", "/v1/edil/jobs/x/model")):
        r = await net.http.request(method, url + path)  # job records are public: an unknown one is said so
        assert r.status_code == 404 and r.json()["cause"] == "no_job", (path, r.text)
    # A real job: a stranger's signed stop is refused and the job goes on.
    job = (await net.submit(0, example(rounds=2, privacy="plain"))).json()
    for method, path in (
        ("POST", f"/v1/edil/jobs/{job['job_id']}/stop"),
        ("GET", f"/v1/edil/jobs/{job['job_id']}/model"),
    ):
        r = await net.http.request(method, url + path)
        assert r.status_code == 401, (path, r.text)
    stranger = NodeKey.generate()
    path = f"/v1/edil/jobs/{job['job_id']}/stop"
    auth = sign_request(
        stranger, network="etest", target=net.nodes[0].address, method="POST", path=path, body=b""
    )
    r = await net.http.post(url + path, headers={"authorization": auth})
    assert r.status_code == 403 and r.json()["cause"] == "forbidden"
    assert net.edil(0).owned[job["job_id"]].state.phase in ("training", "done")
