"""OCPP 2.0.1 station side (docs/ocpp.md): a task of the task process, one module per job.

protocol (version-neutral message layer), connection (security profiles, backoff), variables (settings and
device model), queue (persistent transaction messages), transactions (from the image), smart (charging
profiles), handlers (the CSMS's requests), station (the two loops), task (registration), local_csms (the
small back office of the demo and the tests).
"""
