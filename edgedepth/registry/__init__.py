"""Model registry: signing keys, publishing signed versions, and device-side download and updates.

keys.py (Ed25519 key pairs) · signing.py (manifest.sig, verify_signed_bundle, BundleRejected) ·
index.py (index.json, versions) · storage.py (dir / http(s) / s3 transports) · publish.py ·
client.py (RegistryClient) · updater.py (ModelUpdater) · health.py (HealthCheck).
"""
