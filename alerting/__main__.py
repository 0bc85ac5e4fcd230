"""`python -m alerting`: run the alerting service (see alerting/README.md)."""

from __future__ import annotations

import argparse
import logging
import sys

from alerting.consumer import DependencyLost
from alerting.rules import RulesError, load_rules
from alerting.settings import AlertingSettings
from fraudcore.logs import kv, setup_logging
from fraudcore.settings import load_settings

logger = logging.getLogger(__name__)

EPILOG = """\
configuration (environment, then the root .env):
  KAFKA_BOOTSTRAP_SERVERS, TOPIC_ALERTS, TOPIC_ALERTS_DLQ, TOPIC_LABELS
  ALERTING_HTTP_PORT        API, review page, /health /ready /metrics
  ALERTING_API_KEY          required; X-API-Key for POST /alerts/{id}/feedback
  ALERTS_DATABASE_URL       SQLAlchemy URL (default sqlite:///.run/stack/alerts.db)
  ALERTING_RULES_FILE       routing rules, TOML or YAML (default alerting/rules.toml)
  ALERTING_GROUP_ID         consumer group (default alerting)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m alerting",
        description="Store fraud alerts, deliver them to log/webhook/Slack sinks, serve the "
        "review API and page.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate settings and rules file, then exit"
    )
    args = parser.parse_args(argv)
    setup_logging("alerting")
    settings = load_settings(AlertingSettings)
    try:
        rules = load_rules(settings.alerting_rules_file)
    except RulesError as exc:
        sys.stderr.write(f"rules error: {exc}\n")
        return 2
    if args.check_config:
        sys.stdout.write(
            f"configuration ok: {len(rules.sinks)} sinks, {len(rules.routes)} routes\n"
        )
        return 0
    from alerting.service import run  # heavy imports only when actually serving

    try:
        run(settings, rules)
    except (DependencyLost, TimeoutError, RuntimeError) as exc:
        logger.error("exiting %s", kv(error=exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
