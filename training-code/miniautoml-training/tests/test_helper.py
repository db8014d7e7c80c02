"""Unit tests of the helper's pure parts: the contract, the snapshot parser, the messages.
Run by `make test` (hack/python-tests.sh) with Debian's python3 and its grpcio, protobuf, boto3."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from miniautoml_training import Contract, ContractError, StorageError, parse_snapshot  # noqa: E402
from miniautoml_training import metadata  # noqa: E402

ORIGINAL = {
    "JOB_ID": "7",
    "METADATA_STORE_SERVER": "198.18.0.1:51001",
    "TRAINING_DATA_BUCKET": "miniautoml",
    "TRAINING_DATA_PATH": "/datasets/ns/tweets/snapshots/hashBg==/",
    "MINIO_SERVER": "198.18.0.1:9000",
    "MINIO_SERVER_ACCESS_KEY": "key",
    "MINIO_SERVER_SECRET_KEY": "secret",
}


class ContractTest(unittest.TestCase):
    def test_the_original_environment_is_enough(self):
        contract = Contract.from_env(ORIGINAL)
        self.assertEqual(contract.s3_endpoint, "http://198.18.0.1:9000")
        self.assertEqual(contract.data_path, "datasets/ns/tweets/snapshots/hashBg==")
        self.assertEqual((contract.rank, contract.world_size), (0, 1))
        self.assertIsNone(contract.run_token)

    def test_each_missing_variable_is_named(self):
        for name in ORIGINAL:
            env = dict(ORIGINAL)
            del env[name]
            with self.assertRaises(ContractError) as raised:
                Contract.from_env(env)
            self.assertIn(name, str(raised.exception))

    def test_an_https_metadata_store_needs_its_ca(self):
        env = dict(ORIGINAL, METADATA_STORE_SERVER="https://operator.miniautoml.svc:51001")
        with self.assertRaises(ContractError) as raised:
            Contract.from_env(env)
        self.assertIn("METADATA_STORE_CA", str(raised.exception))
        env["METADATA_STORE_CA"] = "-----BEGIN CERTIFICATE-----"
        Contract.from_env(env)

    def test_aws_variables_stand_in_and_the_endpoint_url_wins(self):
        env = {k: v for k, v in ORIGINAL.items() if not k.startswith("MINIO_")}
        env.update(AWS_ENDPOINT_URL="https://s3.example.com", AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="s")
        contract = Contract.from_env(env)
        self.assertEqual((contract.s3_endpoint, contract.access_key), ("https://s3.example.com", "a"))
        env["MINIO_SERVER"] = "minio:9000"
        self.assertEqual(Contract.from_env(env).s3_endpoint, "https://s3.example.com")

    def test_malformed_values_are_named(self):
        for name, value in [("METADATA_STORE_SERVER", "host"), ("MINIO_SERVER", "ftp://minio:9000"),
                            ("WORLD_SIZE", "two"), ("RANK", "-1")]:
            with self.assertRaises(ContractError) as raised:
                Contract.from_env(dict(ORIGINAL, **{name: value}))
            self.assertIn(name if name != "MINIO_SERVER" else "ftp://", str(raised.exception))
        with self.assertRaises(ContractError) as raised:
            Contract.from_env(dict(ORIGINAL, WORLD_SIZE="2", RANK="2"))
        self.assertIn("RANK=2 is not below WORLD_SIZE=2", str(raised.exception))

    def test_hyperparameters_are_read_by_name_and_recorded(self):
        contract = Contract.from_env(dict(ORIGINAL, EPOCHS="4", LR="x"))
        self.assertEqual(contract.parameter("EPOCHS", 5, int), 4)
        self.assertEqual(contract.parameter("BATCH_SIZE", 64, int), 64)
        self.assertEqual(contract.used, {"EPOCHS": "4", "BATCH_SIZE": "64"})
        with self.assertRaises(ContractError) as raised:
            contract.parameter("LR", 0.1, float)
        self.assertIn("LR='x' is not a valid float", str(raised.exception))


class SnapshotTest(unittest.TestCase):
    def test_a_snapshot_parses_to_texts_classes_and_labels(self):
        texts, classes, labels = parse_snapshot(b'"hello, world",2\nbye,1;2\n', b"1,anger\n2,joy\n")
        self.assertEqual((texts, classes, labels), (["hello, world", "bye"], [1, 0], ["anger", "joy"]))

    def test_bad_rows_name_their_file_and_line(self):
        cases = [(b"a,1\nb\n", b"1,x\n", "examples.csv line 2: expected 2 columns"),
                 (b"a,3\n", b"1,x\n2,y\n", "examples.csv line 1: label id '3' is not in labels.csv"),
                 (b"a,1\n", b"2,x\n", "labels.csv line 1"),
                 (b"", b"1,x\n", "examples.csv has no rows")]
        for examples, labels, expected in cases:
            with self.assertRaises(StorageError) as raised:
                parse_snapshot(examples, labels)
            self.assertIn(expected, str(raised.exception))


class MessagesTest(unittest.TestCase):
    def test_the_descriptor_set_gives_the_original_messages(self):
        request = metadata._message("LogEpochRequest")()
        request.epoch_info.epoch_id = "1-3"
        request.epoch_info.metrics["accuracy"] = "0.5"
        again = metadata._message("LogEpochRequest").FromString(request.SerializeToString())
        self.assertEqual(again.epoch_info.epoch_id, "1-3")
        self.assertEqual(dict(again.epoch_info.metrics), {"accuracy": "0.5"})
        start = metadata._message("LogRunStartResponse")(bucket="b", path="p")
        self.assertEqual(start.bucket, "b")


if __name__ == "__main__":
    unittest.main()
