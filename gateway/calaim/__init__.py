"""CalAIM ECM and Community Supports: the implementation guide, the plan's configuration, the workflow rules.

The business facts (../shared/calaim/REFERENCE.md) live as data under ``profiles/calaim/`` (FHIR
conformance resources, conventions in docs/calaim-ig.md) and ``profiles/orange-county/`` (the default
plan); ``gateway.calaim.config`` reads them and ``gateway.calaim.policy`` answers the workflow's questions.

The workflow (docs/calaim-workflow.md), installed on the FHIR core by ``setup.install``:
``referrals`` (intake, routing in ``routing``), ``closed_loop`` (the referral Task), ``decide`` with
``decision_rules`` and ``authorizations`` (``$decide``), ``submit`` (``$submit``), ``activity`` (service
documentation, ``$ecm-activity``), ``events`` (outbox topics), ``demo``.
"""
