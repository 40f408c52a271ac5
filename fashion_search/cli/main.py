"""The `fashion-search` command: demo, serve, ingest, reindex, train, eval, bench, healthcheck."""

from __future__ import annotations

import sys

from fashion_search.cli.parser import build_parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fashion-search` command."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        args.options = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from pydantic import ValidationError

    from fashion_search.core.settings import Settings, get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        # A bad FS_* variable is the operator's to fix: name it instead of printing a traceback.
        prefix = str(Settings.model_config.get("env_prefix", ""))
        errors = "; ".join(
            (f"{prefix}{'.'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "") + e["msg"] for e in exc.errors()
        )
        print(f"error: invalid settings: {errors}", file=sys.stderr)
        return 2
    from fashion_search.cli import commands
    from fashion_search.core.domain import IndexLayoutError
    from fashion_search.core.observability import configure_logging, setup_tracing

    verb = getattr(args, "verb", None) if args.command != "train" else None
    name = args.command if verb is None else f"{args.command}_{verb}"
    process = args.target if args.command == "serve" else args.command
    configure_logging(settings, process)
    setup_tracing(settings, process)
    handler = getattr(commands, f"cmd_{name.replace('-', '_')}")
    try:
        return int(handler(args, settings) or 0)
    except IndexLayoutError as exc:
        # A configuration change, not a crash: say what to do instead of printing a traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
