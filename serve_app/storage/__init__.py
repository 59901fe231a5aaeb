from serve_app.storage.local import LocalStorage, StoredImage
from serve_app.storage.signing import UrlSigner

__all__ = ["LocalStorage", "StoredImage", "UrlSigner"]
