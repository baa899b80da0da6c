"""Validate the VirtualMachine of a YAML stream against KubeVirt's OpenAPI (swagger 2.0)
definitions, with every object that lists its properties closed to others (Kubernetes schemas
leave additionalProperties unset, so a misspelled key would pass otherwise).

    kubevirt-validate.py SCHEMA.json STREAM.yaml     # exit 0: valid; 1: the errors, one a line
"""
import json
import sys

import jsonschema
import yaml


def closed(defs):
    for d in defs.values():
        if isinstance(d, dict) and "properties" in d and "additionalProperties" not in d:
            d["additionalProperties"] = False
    return defs


def main(schema_path, stream_path):
    with open(schema_path) as f:
        defs = closed(json.load(f)["definitions"])
    with open(stream_path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    vms = [d for d in docs if d.get("kind") == "VirtualMachine"]
    if len(vms) != 1:
        print("expected one VirtualMachine, found %d" % len(vms))
        return 1
    schema = {"$ref": "#/definitions/v1.VirtualMachine", "definitions": defs}
    errors = list(jsonschema.Draft4Validator(schema).iter_errors(vms[0]))
    for e in errors:
        print("%s: %s" % ("/".join(str(p) for p in e.absolute_path), e.message))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
