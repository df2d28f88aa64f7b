import urllib.request


def test_mlflow_server_and_moto_start(mlflow_server, moto_s3):
    with urllib.request.urlopen(mlflow_server.url + "/health", timeout=5) as r:
        assert r.status == 200
    buckets = [b["Name"] for b in moto_s3.client().list_buckets()["Buckets"]]
    assert mlflow_server.bucket in buckets
