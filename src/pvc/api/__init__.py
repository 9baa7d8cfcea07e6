"""The REST API: pvcd serves every registered operation (``pvc.ops``) under ``/api/v1``
(``pvc.api.server``), and the CLI can reach it instead of ZooKeeper (``pvc.api.client``).

What both sides must agree on (how params travel, how errors and streams are encoded) lives in
``pvc.api.wire``, once; the OpenAPI document is generated from the same registry (``pvc.api.openapi``).
docs/api.md describes it for users.
"""
