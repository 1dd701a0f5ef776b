"""Validates OCSF events, one JSON object per line, with other projects' pydantic
models of the OCSF schema: py-ocsf-models (Prowler's) for Detection Findings (2004),
ocsf-pydantic (Crowdalert's) for API Activity (6003), which py-ocsf-models does not
model. Besides the models' own checks (required attributes, types, enums), a top-level
attribute that neither the class nor a profile the event declares defines is an error
(pydantic would ignore it silently), and so is a derived attribute (type_uid,
category_name, type_name) that disagrees with what the model derives. Exits 1 if any
event is invalid."""

import json
import sys

from ocsf.events.application.api import APIActivity
from py_ocsf_models.events.findings.detection_finding import DetectionFinding

CLASSES = {2004: DetectionFinding, 6003: APIActivity}

# Attributes a profile adds to a class when an event declares it in metadata.profiles
# (from the OCSF schema's profiles/*.json); py-ocsf-models has no profile models.
PROFILES = {
    "security_control": {
        "action", "action_id", "attacks", "authorizations", "confidence",
        "confidence_id", "confidence_score", "disposition", "disposition_id",
        "firewall_rule", "is_alert", "malware", "policy", "risk_details",
        "risk_level", "risk_level_id", "risk_score",
    },
}


def attribute_names(model):
    names = set(model.model_computed_fields)
    for name, field in model.model_fields.items():
        names.add(field.alias or name)
    return names


def derived_mismatches(model, instance, event):
    wrong = []
    for name in model.model_computed_fields:
        if name in event and getattr(instance, name) != event[name]:
            wrong.append(f"{name} is {event[name]!r}, the model derives {getattr(instance, name)!r}")
    return wrong


def main(path):
    bad = 0
    total = 0
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            total += 1
            event = json.loads(line)
            model = CLASSES.get(event.get("class_uid"))
            if model is None:
                print(f"line {number}: no model for class_uid {event.get('class_uid')}")
                bad += 1
                continue
            try:
                instance = model.model_validate(event)
            except Exception as error:  # pydantic.ValidationError, with every problem
                print(f"line {number}: {error}")
                bad += 1
                continue
            wrong = derived_mismatches(model, instance, event)
            if wrong:
                print(f"line {number}: {'; '.join(wrong)}")
                bad += 1
                continue
            declared = event.get("metadata", {}).get("profiles", [])
            undefined = [p for p in declared if p not in PROFILES]
            if undefined:
                print(f"line {number}: unknown profiles {undefined}")
                bad += 1
                continue
            allowed = attribute_names(model).union(*(PROFILES[p] for p in declared))
            unknown = sorted(set(event) - allowed)
            if unknown:
                print(
                    f"line {number}: attributes neither {model.__name__} nor its "
                    f"declared profiles {declared} define: {unknown}"
                )
                bad += 1
    print(f"{total - bad} of {total} valid")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
