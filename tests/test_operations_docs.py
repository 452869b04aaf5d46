"""The production runbook's artifacts stay true to the code: the IAM policy names exactly the AWS
calls the code makes, the CloudFormation template lints clean, matches devstack/topology.py and
deploys its queues (moto), and the production dagster.yaml passes Dagster's own config schema."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from devstack import topology
from tests.paths import REPO_ROOT

REPO = REPO_ROOT
POLICY = REPO / "docs" / "iam-policy.json"
TEMPLATE = REPO / "docs" / "cloudformation.yaml"
PROFILE = REPO / ".dagster" / "production"

# boto3 operation -> the IAM actions that authorize it, where they differ from "<prefix>:<Operation>".
IAM_ACTIONS = {
    ("sqs", "DeleteMessageBatch"): {"sqs:DeleteMessage"},
    ("sqs", "SendMessageBatch"): {"sqs:SendMessage"},
    ("sqs", "ChangeMessageVisibilityBatch"): {"sqs:ChangeMessageVisibility"},
    # SESv2 SendEmail with Content.Raw (what resources/ses.py sends): AWS documents ses:SendEmail;
    # ses:SendRawEmail is granted with it, as AWS's own tooling does for an identity's senders.
    ("sesv2", "SendEmail"): {"ses:SendEmail", "ses:SendRawEmail"},
}
PREFIX = {"sqs": "sqs", "sns": "sns", "ses": "ses", "sesv2": "ses", "s3": "s3"}


def _operations() -> dict[str, list[tuple[str, str]]]:
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    ops: dict[str, list[tuple[str, str]]] = {}
    for service in PREFIX:
        for method, api in session.client(service).meta.method_to_api_mapping.items():
            ops.setdefault(method, []).append((service, api))
    return ops


def actions_the_code_calls() -> dict[str, set[str]]:
    """IAM action -> the files calling it, from every boto3 operation called in a module that uses boto3."""
    ops = _operations()
    found: dict[str, set[str]] = {}
    for path in sorted([*REPO.glob("pipelines/**/*.py"), *REPO.glob("resources/**/*.py")]):
        text = path.read_text()
        if "boto3" not in text:
            continue
        for method in set(re.findall(r"\.([a-z_]+)\(", text)):
            for service, api in ops.get(method, []):
                for action in IAM_ACTIONS.get((service, api), {f"{PREFIX[service]}:{api}"}):
                    found.setdefault(action, set()).add(str(path.relative_to(REPO)))
    return found


def policy_actions() -> dict[str, list[str]]:
    policy = json.loads(POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    actions: dict[str, list[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in statement["Action"]:
            assert "*" not in action, f"wildcard action {action}"
            actions.setdefault(action, []).extend(resources)
    return actions


def test_iam_policy_names_exactly_the_calls_the_code_makes():
    called = actions_the_code_calls()
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "ses:SendEmail", "sns:ConfirmSubscription"} <= set(called)
    granted = policy_actions()
    missing = {a: sorted(f) for a, f in called.items() if a not in granted}
    unused = sorted(set(granted) - set(called))
    assert not missing, f"the code calls these, the policy does not grant them: {missing}"
    assert not unused, f"the policy grants actions no code calls: {unused}"


def test_iam_policy_scopes_queue_and_topic_actions_to_the_named_resources():
    granted = policy_actions()
    consumed = {f"arn:aws:sqs:*:*:{q}" for q in topology.QUEUES}
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        assert set(granted[action]) == consumed, action
    # Billing's dunning notices are email requests the Stripe drain sends through dispatch().
    assert sorted(granted["sqs:SendMessage"]) == ["arn:aws:sqs:*:*:address-changes", "arn:aws:sqs:*:*:email-requests"]
    assert granted["sns:ConfirmSubscription"] == [f"arn:aws:sns:*:*:{topology.TOPIC_NAME}"]
    assert all(r.startswith("arn:aws:ses:") for r in granted["ses:SendEmail"])


def _template() -> dict:
    from cfnlint.decode.cfn_yaml import load

    return load(str(TEMPLATE))


def _of_type(template: dict, kind: str) -> dict[str, dict]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def test_cloudformation_template_lints_clean():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"   # installed with moto[server]
    assert cfn_lint.exists(), f"{cfn_lint} missing: pip install -c constraints.txt -e '.[dev]'"
    result = subprocess.run([str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cloudformation_template_matches_the_local_topology():
    template = _template()
    queues = {r["Properties"]["QueueName"]: (name, r) for name, r in _of_type(template, "AWS::SQS::Queue").items()}
    wanted = set(topology.QUEUES) | {topology.dlq_name(q) for q in topology.QUEUES}
    assert set(queues) == wanted
    for queue in topology.QUEUES:
        redrive = queues[queue][1]["Properties"]["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == topology.MAX_RECEIVE_COUNT
        assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [queues[topology.dlq_name(queue)][0], "Arn"]}
        assert "RedrivePolicy" not in queues[topology.dlq_name(queue)][1]["Properties"]

    (topic_name, topic), = _of_type(template, "AWS::SNS::Topic").items()
    assert topic["Properties"]["TopicName"] == topology.TOPIC_NAME
    assert topic["Properties"]["SignatureVersion"] == "2"
    (_, sub), = _of_type(template, "AWS::SNS::Subscription").items()
    assert sub["Properties"]["TopicArn"] == {"Ref": topic_name}
    assert sub["Properties"]["Endpoint"] == {"Fn::GetAtt": [queues[topology.NOTIFICATIONS_QUEUE][0], "Arn"]}
    assert sub["Properties"]["Protocol"] == "sqs" and sub["Properties"]["RawMessageDelivery"] is False

    (config_set_name, config_set), = _of_type(template, "AWS::SES::ConfigurationSet").items()
    assert config_set["Properties"]["Name"] == topology.CONFIGURATION_SET
    (_, dest), = _of_type(template, "AWS::SES::ConfigurationSetEventDestination").items()
    assert dest["Properties"]["ConfigurationSetName"] == {"Ref": config_set_name}
    events = dest["Properties"]["EventDestination"]
    assert set(events["MatchingEventTypes"]) == {t.lower() for t in topology.NOTIFICATION_TYPES}
    assert events["SnsDestination"]["TopicARN"] == {"Ref": topic_name}

    (_, rule), = _of_type(template, "AWS::Events::Rule").items()
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [queues["stripe-events"][0], "Arn"]}
    assert rule["Properties"]["EventPattern"]["source"] == [{"prefix": "aws.partner/stripe.com"}]
    (_, method), = _of_type(template, "AWS::ApiGateway::Method").items()
    assert method["Properties"]["Integration"]["Uri"]["Fn::Sub"].endswith("/stripe-events")

    (_, bucket), = _of_type(template, "AWS::S3::Bucket").items()
    assert bucket["Properties"]["BucketName"] == {"Ref": "AssetBucketName"}
    assert template["Parameters"]["AssetBucketName"]["Default"] == topology.ASSET_BUCKET
    assert template["Outputs"]["AssetStoreUrl"]["Value"] == {"Fn::Sub": f"s3://${{AssetBucket}}/{topology.ASSET_PREFIX}"}
    assert policy_actions()["s3:PutObject"] == [f"arn:aws:s3:::{topology.ASSET_BUCKET}/{topology.ASSET_PREFIX}/*"]


def test_cloudformation_queues_deploy_on_moto_with_their_redrive_policies():
    from moto import mock_aws

    template = _template()
    sqs_only = {"AWSTemplateFormatVersion": "2010-09-09",
                "Resources": _of_type(template, "AWS::SQS::Queue")}
    with mock_aws():
        cfn = boto3.client("cloudformation", region_name="us-east-1")
        cfn.create_stack(StackName="mailroom-queues", TemplateBody=json.dumps(sqs_only))
        stack = cfn.describe_stacks(StackName="mailroom-queues")["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
        sqs = boto3.client("sqs", region_name="us-east-1")
        for queue in topology.QUEUES:
            url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            redrive = json.loads(attrs["RedrivePolicy"])
            assert int(redrive["maxReceiveCount"]) == topology.MAX_RECEIVE_COUNT
            assert redrive["deadLetterTargetArn"].endswith(":" + topology.dlq_name(queue))
            sqs.get_queue_url(QueueName=topology.dlq_name(queue))


def test_production_dagster_yaml_passes_dagsters_config_schema(tmp_path):
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(PROFILE))
    assert set(config["storage"]) == {"postgres"}
    assert config["run_monitoring"]["enabled"] is True
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["run_retries"]["enabled"] is True and config["run_retries"]["max_retries"] >= 1
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"

    # The schema is really applied: a misspelt key is refused.
    broken = tmp_path / "broken"
    broken.mkdir()
    text = (PROFILE / "dagster.yaml").read_text().replace("max_retries:", "max_retires:")
    (broken / "dagster.yaml").write_text(text)
    with pytest.raises(Exception, match="max_retires"):
        dagster_instance_config(str(broken))


def test_runbook_covers_what_to_do_when():
    doc = (REPO / "docs" / "operations.md").read_text()
    for heading in ("A DLQ fills", "A reputation check fails", "Drift is reported", "A signature check fails",
                    "Quarantine grows"):
        assert re.search(rf"^#+ .*{re.escape(heading)}", doc, re.M | re.I), f"no section on: {heading}"
    assert "docs/iam-policy.json" in doc and "docs/cloudformation.yaml" in doc
    assert json.loads(POLICY.read_text()) == json.loads(_fenced(doc, "json")), \
        "the policy in operations.md differs from docs/iam-policy.json"


def _fenced(doc: str, lang: str) -> str:
    match = re.search(rf"```{lang}\n(.*?)```", doc, re.S)
    assert match, f"no ```{lang} block in operations.md"
    return match.group(1)


def test_systemd_units_in_the_runbook_start_the_real_commands():
    doc = (REPO / "docs" / "operations.md").read_text()
    units = re.findall(r"```ini\n(.*?)```", doc, re.S)
    execs = [line.split("=", 1)[1] for unit in units for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert any("dagster-daemon run" in e for e in execs) and any("dagster-webserver" in e for e in execs), execs
    for e in execs:
        program = Path(e.split()[0]).name
        assert shutil.which(program, path=str(Path(sys.executable).parent)), f"{program} is not in the venv"
