"""The lab's Monitoring filter language, by tables of filters and series headers."""

from __future__ import annotations

import pytest

from greenlight_lab.monitoring import (
    CUMULATIVE,
    DOUBLE,
    FilterError,
    Header,
    mentions_metric_type,
    parse_filter,
)

REQUESTS = "prometheus.googleapis.com/http_requests_total/counter"

GREEN_500 = Header(
    REQUESTS,
    {"code": "500", "color": "green", "pod": "backend-green-0", "method": "GET"},
    "prometheus_target",
    {"namespace": "sma-staging", "cluster": "lab-primary", "job": "backend"},
    CUMULATIVE,
    DOUBLE,
)
BLUE_200 = Header(
    REQUESTS,
    {"code": "200", "color": "blue", "pod": "backend-blue-1", "method": "GET"},
    "prometheus_target",
    {"namespace": "sma-production", "cluster": "lab-primary", "job": "backend"},
    CUMULATIVE,
    DOUBLE,
)

MATCHES = [
    # (filter, matches GREEN_500, matches BLUE_200)
    (f'metric.type="{REQUESTS}"', True, True),
    (f'metric.type = "{REQUESTS}" resource.labels.namespace = "sma-staging"', True, False),
    (f'metric.type="{REQUESTS}" AND metric.labels.color="blue"', False, True),
    (f'metric.type="{REQUESTS}" metric.label.color="green"', True, False),
    (f'metric.type="{REQUESTS}" resource.label.namespace!="sma-staging"', False, True),
    (f'metric.type="{REQUESTS}" metric.labels.code=monitoring.regex.full_match("5..")', True, False),
    (f'metric.type="{REQUESTS}" metric.labels.code=monitoring.regex.full_match("5")', False, False),
    (f'metric.type="{REQUESTS}" metric.labels.code!=monitoring.regex.full_match("5..")', False, True),
    ('metric.type=starts_with("prometheus.googleapis.com/")', True, True),
    ('metric.type=ends_with("/histogram")', False, False),
    ('metric.type=has_substring("http_requests")', True, True),
    ('metric.type:"http_requests"', True, True),
    (f'metric.type="{REQUESTS}" metric.labels.pod=one_of("backend-green-0", "backend-blue-1")', True, True),
    (f'metric.type="{REQUESTS}" metric.labels.pod=one_of("backend-green-9")', False, False),
    (
        f'(metric.type="{REQUESTS}") AND (metric.labels.color="green" OR metric.labels.color="blue")',
        True,
        True,
    ),
    (f'metric.type="{REQUESTS}" NOT metric.labels.color="green"', False, True),
    (f'metric.type="{REQUESTS}" metric.labels.missing="x"', False, False),
    (f'metric.type="{REQUESTS}" metric.labels.missing!="x"', True, True),
    (f"metric.type='{REQUESTS}' resource.type='prometheus_target'", True, True),
    (f'metric.type="{REQUESTS}" project="lab-project"', True, True),
    (f'metric.type="{REQUESTS}" metric.labels.code=500', True, False),
    ('metric.type="custom.googleapis.com/x"', False, False),
]


@pytest.mark.parametrize(("text", "green_500", "blue_200"), MATCHES)
def test_filter_matches_the_series_it_names(text: str, green_500: bool, blue_200: bool) -> None:
    """Each filter selects exactly the headers a Cloud Monitoring filter would."""
    node = parse_filter(text)
    assert node.matches(GREEN_500, "lab-project") is green_500
    assert node.matches(BLUE_200, "lab-project") is blue_200


INVALID = [
    # (filter, part the message must name)
    ("", "empty"),
    ('metric.type ~ "x"', "'~'"),
    ('metric.type == "x"', "'='"),
    ('metric.type < "x"', "'<'"),
    ('metric.typo = "x"', "metric.typo"),
    ('metric.labels = "x"', "metric.labels"),
    ('metric.type = "x" AND', "end of the filter"),
    ('metric.type = "x', "'\"'"),
    ("metric.type = x", "'x'"),
    ('metric.type = regex("x")', "'regex'"),
    ('metric.type = starts_with("a", "b")', "exactly one argument"),
    ('metric.type = starts_with("a"', "end of the filter"),
    ("metric.type = one_of(a)", "'a'"),
    ('metric.type = monitoring.regex.full_match("(")', "invalid regular expression"),
    ('(metric.type = "x"', "')'"),
    ('metric.type = "x")', "')'"),
    ('metric.type : starts_with("x")', "':'"),
    ('= "x"', "'='"),
    ('metric.type = "x" OR', "end of the filter"),
]


@pytest.mark.parametrize(("text", "named"), INVALID)
def test_invalid_filter_names_the_offending_part(text: str, named: str) -> None:
    """A filter the lab cannot parse raises FilterError whose message names the bad part."""
    with pytest.raises(FilterError) as caught:
        parse_filter(text)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('metric.type = "x"', True),
        ('resource.labels.namespace = "a" metric.type = starts_with("x")', True),
        ('resource.labels.namespace = "a" OR (NOT metric.type = "x")', True),
        ('resource.labels.namespace = "a" metric.labels.code = "500"', False),
    ],
)
def test_metric_type_restriction_is_detected(text: str, expected: bool) -> None:
    """mentions_metric_type finds a metric.type comparison anywhere in the filter."""
    assert mentions_metric_type(parse_filter(text)) is expected
