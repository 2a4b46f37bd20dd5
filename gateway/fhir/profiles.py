"""Profiles the gateway validates against: https://hl7.org/fhir/R4/profiling.html.

A ``ProfileSet`` holds the conformance resources of one implementation guide folder (by default
``profiles/calaim/``): StructureDefinitions by canonical url (and ``url|version``), ValueSets and
CodeSystems for the required bindings (``gateway.fhir.terminology``). Each profile is compiled from its
differential once, on first use (``gateway.fhir.profile_compile``), and checked by
``gateway.fhir.profile_check``; a profile that cannot be interpreted compiles to a ``ProfileError`` that
every check against it reports as an error issue, never a silent pass.

Entry points:

- ``validate_against_profile(resource, url)``: ``$validate?profile=`` and explicit checks;
- ``claimed_profile_issues(resource, type)``: what ``validate_resource`` adds for ``meta.profile``
  (https://hl7.org/fhir/R4/resource-definitions.html#Meta.profile): every known profile is checked; an
  unknown one gives a **warning** (code ``not-supported``), because R4 lets a server accept a resource
  whose claimed profiles it does not know (https://hl7.org/fhir/R4/validation.html#profile-validation);
- ``default_profiles().profiles_for(type)``: the CapabilityStatement's ``supportedProfile``.

What a profile can say is listed in ``gateway.fhir.profile_compile``. Not checked, by design: whether a
referenced resource conforms to a ``targetProfile`` (only its type is checked, for literal references;
resolving references on every write would read the store), ``meta.profile`` of contained resources,
bindings weaker than required, and snapshots (the differential is read over the R4 base definitions;
a snapshot adds nothing the gateway would use).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import orjson

from gateway.errors import Issue
from gateway.fhir.profile_check import check_profile
from gateway.fhir.profile_compile import BASE, compile_structure
from gateway.fhir.profile_model import CompiledProfile, ProfileError
from gateway.fhir.terminology import Expansion, Terminology, core_expansions
from gateway.search.registry import PROFILES_DIR
from gateway.types import JSONObject

__all__ = [
    "BASE_PROFILE",
    "CALAIM_DIR",
    "FHIR_VERSION",
    "ProfileError",
    "ProfileSet",
    "claimed_profile_issues",
    "default_profiles",
    "is_base_profile",
    "load_profile_set",
    "validate_against_profile",
]

CALAIM_DIR = PROFILES_DIR / "calaim"
BASE_PROFILE = BASE
"""The prefix of the R4 base StructureDefinitions: ``BASE_PROFILE + "Patient"``."""
FHIR_VERSION = "4.0.1"


class ProfileSet:
    """The StructureDefinitions, ValueSets and CodeSystems of one guide, with compiled profiles cached."""

    def __init__(self, resources: Iterable[JSONObject], *, source: str = "") -> None:
        self.source = source
        self.structures: dict[str, JSONObject] = {}
        code_systems: dict[str, JSONObject] = {}
        value_sets: dict[str, JSONObject] = {}
        tables = {"StructureDefinition": self.structures, "CodeSystem": code_systems, "ValueSet": value_sets}
        for resource in resources:
            table = tables.get(str(resource.get("resourceType")))
            if table is None:
                continue  # SearchParameters, NamingSystems, ...: not for validation
            url = resource.get("url")
            if not isinstance(url, str) or not url:
                raise ProfileError(f"{source}: a {resource.get('resourceType')} without a url")
            keys = [url] + ([f"{url}|{resource['version']}"] if isinstance(resource.get("version"), str) else [])
            for key in keys:
                if key in table:
                    raise ProfileError(f"{source}: two {resource['resourceType']}s have the url {key}")
                table[key] = resource
        self.terminology = Terminology(code_systems, value_sets, core_expansions())
        self._compiled: dict[str, CompiledProfile | ProfileError] = {}
        self._lock = threading.RLock()

    def structure(self, url: str) -> JSONObject | None:
        """The StructureDefinition with canonical ``url`` (``url|version`` accepted)."""
        found = self.structures.get(url)
        if found is None and "|" in url:
            candidate = self.structures.get(url.partition("|")[0])
            if candidate is not None and candidate.get("version") in (None, url.partition("|")[2]):
                found = candidate
        return found

    def expand(self, url: str) -> Expansion:
        """The codes of a ValueSet of this set or of R4 core (raises ``TerminologyError``)."""
        return self.terminology.expand(url)

    def knows(self, url: str) -> bool:
        """Whether ``url`` names a profile of this set."""
        return self.structure(url) is not None

    def compile(self, url: str) -> CompiledProfile:
        """The compiled profile ``url``, compiled once with every profile it uses; raises ``ProfileError``."""
        found = self._compiled.get(url)
        if found is None:
            with self._lock:  # one compile per profile even when requests race for it
                found = self._compiled.get(url)
                if found is None:
                    found = self._compile(url, ())
        if isinstance(found, ProfileError):
            raise found
        return found

    def _compile(self, url: str, stack: tuple[str, ...]) -> CompiledProfile | ProfileError:
        sd = self.structure(url)
        if sd is None:
            return ProfileError(f"unknown profile {url}")
        result: CompiledProfile | ProfileError
        try:
            result = compile_structure(sd, self)
            for used in result.uses:
                # Compiled now, so a broken extension definition breaks the profile that uses it at once
                # (recursive definitions, such as a nested extension, are compiled by the outer call).
                if used not in stack and used != url and self._compiled.get(used) is None:
                    dependency = self._compile(used, (*stack, url))
                    if isinstance(dependency, ProfileError):
                        raise ProfileError(f"{url} uses {used}, which cannot be checked: {dependency}")
        except ProfileError as exc:
            result = exc
        self._compiled[url] = result
        return result

    def profiles_for(self, resource_type: str) -> list[str]:
        """Canonical urls of the profiles of ``resource_type`` (not extensions), sorted."""
        return sorted(
            {
                str(sd["url"])
                for sd in self.structures.values()
                if sd.get("type") == resource_type
                and sd.get("kind") == "resource"
                and sd.get("derivation") == "constraint"
                and not sd.get("abstract")
            }
        )

    def all_profiles(self) -> list[str]:
        """Canonical urls of every StructureDefinition of the set (profiles and extensions), sorted."""
        return sorted({str(sd["url"]) for sd in self.structures.values()})


def load_profile_set(directory: Path) -> ProfileSet:
    """Every ``*.json`` conformance resource in ``directory`` (empty when it does not exist)."""
    resources: list[JSONObject] = []
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            try:
                data = orjson.loads(path.read_bytes())
            except orjson.JSONDecodeError as exc:
                raise ProfileError(f"{path}: not JSON: {exc}") from None
            if isinstance(data, dict):
                resources.append(data)
    return ProfileSet(resources, source=str(directory))


@lru_cache(maxsize=1)
def default_profiles() -> ProfileSet:
    """The CalAIM guide (profiles/calaim/), loaded once per process."""
    return load_profile_set(CALAIM_DIR)


def is_base_profile(url: str, resource_type: str) -> bool:
    """Whether ``url`` is the R4 definition of ``resource_type`` itself (checked by the base validation)."""
    canonical, _, version = url.partition("|")
    return canonical == BASE_PROFILE + resource_type and version in ("", FHIR_VERSION)


def validate_against_profile(
    resource: JSONObject, profile_url: str, *, profiles: ProfileSet | None = None
) -> list[Issue]:
    """Every way ``resource`` fails the profile ``profile_url`` (empty: it conforms).

    Only the profile's own rules: run ``validation.validate_resource`` for the base R4 ones. An unknown
    profile, or one that cannot be interpreted, gives one error issue (``not-supported``) saying so.
    """
    profiles = profiles if profiles is not None else default_profiles()
    rtype = str(resource.get("resourceType", ""))
    try:
        compiled = profiles.compile(profile_url)
    except ProfileError as exc:
        return [Issue("not-supported", f"profile {profile_url[:200]} cannot be checked: {exc}")]
    if compiled.type != rtype:
        text = f"{rtype or 'the resource'} cannot conform to profile {profile_url}, a profile of {compiled.type}"
        return [Issue("invalid", text, expression=("resourceType",))]
    return check_profile(compiled, resource, rtype, profiles.compile)


def claimed_profile_issues(
    resource: JSONObject, resource_type: str, *, profiles: ProfileSet | None = None
) -> list[Issue]:
    """Issues for the profiles ``resource`` claims in ``meta.profile`` (except the base R4 definition).

    A known profile is checked (its issues are errors); an unknown url is a warning, since a server may
    accept resources claiming profiles it does not know (https://hl7.org/fhir/R4/validation.html).
    """
    meta = resource.get("meta")
    claimed = meta.get("profile") if type(meta) is dict else None
    if type(claimed) is not list:
        return []
    profiles = profiles if profiles is not None else default_profiles()
    issues: list[Issue] = []
    seen: set[str] = set()
    for i, url in enumerate(claimed):
        if type(url) is not str or is_base_profile(url, resource_type) or url in seen:
            continue
        seen.add(url)
        if profiles.knows(url):
            issues.extend(validate_against_profile(resource, url, profiles=profiles))
        else:
            text = f"meta.profile {url[:200]} is unknown to this server and was not checked"
            expression = f"{resource_type}.meta.profile[{i}]"
            issues.append(Issue("not-supported", text, severity="warning", expression=(expression,)))
    return issues
