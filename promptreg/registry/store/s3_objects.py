"""Small whole objects beside the artifacts of an S3 store (captured traffic, see
promptreg.registry.captures): one PUT per object, and S3 never shows a partly received object, so a
reader sees a whole object or nothing. Mixed into :class:`promptreg.registry.store.s3.S3Store`."""

from __future__ import annotations

from promptreg.registry.store.base import ObjectStat, check_object_key


class S3Objects:
    """``put_object`` / ``get_object`` / ``list_objects`` / ``delete_objects`` under the store's prefix."""

    def _object_key(self, key: str) -> str:
        rel = check_object_key(key)
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def put_object(self, key: str, data: bytes) -> str:
        full = self._object_key(key)
        uri = f"s3://{self.bucket}/{full}"
        self._ensure_reachable()
        with self._errors(f"write {uri}"):
            self._client().put_object(Bucket=self.bucket, Key=full, Body=data, ContentLength=len(data),
                                      ContentType="application/x-ndjson")
        return uri

    def get_object(self, key: str) -> bytes:
        full = self._object_key(key)
        uri = f"s3://{self.bucket}/{full}"
        self._ensure_reachable()
        with self._errors(f"read {uri}", missing=uri):
            body = self._client().get_object(Bucket=self.bucket, Key=full)["Body"]
            try:
                return body.read()
            finally:
                body.close()

    def list_objects(self, prefix: str) -> list[ObjectStat]:
        base = f"{self.prefix}/" if self.prefix else ""
        folder = prefix.rstrip("/")
        if folder:
            check_object_key(folder)
        self._ensure_reachable()
        with self._errors(f"list s3://{self.bucket}/{base}{prefix}"):
            listing = self._list(base + prefix)
        out = []
        for key, obj in listing.items():
            rel = key[len(base):]
            if any(part.startswith(".") for part in rel.split("/")):
                continue
            modified = obj.get("LastModified")
            out.append(ObjectStat(rel, int(obj.get("Size", 0)), modified.timestamp() if modified else 0.0))
        return sorted(out, key=lambda o: o.key)

    def delete_objects(self, keys: list[str]) -> None:
        full = [self._object_key(k) for k in keys]
        if not full:
            return
        self._ensure_reachable()
        with self._errors(f"delete objects in s3://{self.bucket}"):
            self._delete_keys(full)
