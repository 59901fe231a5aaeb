from serve_app.storage.base import Storage, StoredImage
from serve_app.storage.factory import build_storage
from serve_app.storage.keys import InvalidKeyError, job_result_key
from serve_app.storage.local import LocalStorage
from serve_app.storage.signing import UrlSigner

__all__ = [
    "InvalidKeyError",
    "LocalStorage",
    "Storage",
    "StoredImage",
    "UrlSigner",
    "build_storage",
    "job_result_key",
]
