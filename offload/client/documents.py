"""The GraphQL documents the client sends to the Dagster webserver, kept apart from the client's logic so
they can be read, and validated against Dagster's schema (tests/test_runs.py), in one place.

``RUN_FIELDS`` is the fragment every run query shares; ``LAUNCH_RESULT`` the selection of a launch's
outcome, shared by the single and the batch launch.
"""

from __future__ import annotations

__all__ = [
    "EVENTS_QUERY",
    "JOBS_QUERY",
    "LAUNCH",
    "LAUNCH_MANY",
    "LAUNCH_RESULT",
    "RUNS_QUERY",
    "RUN_FIELDS",
    "RUN_QUERY",
    "TERMINATE",
]

RUN_FIELDS = """
fragment OffloadRun on Run {
  runId jobName status creationTime startTime endTime rootRunId parentRunId runConfig tags { key value }
  repositoryOrigin { id }
}"""

JOBS_QUERY = """
query OffloadJobs {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } pipelines { name tags { key value } } } }
    ... on PythonError { message }
  }
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries { name locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
}"""

LAUNCH_RESULT = """
  __typename
  ... on LaunchRunSuccess { run { runId } }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on PythonError { message className errorChain { error { message className } } }
  ... on Error { message }
"""

LAUNCH = f"""
mutation OffloadLaunch($params: ExecutionParams!) {{
  launchRun(executionParams: $params) {{ {LAUNCH_RESULT} }}
}}"""

LAUNCH_MANY = f"""
mutation OffloadLaunchMany($params: [ExecutionParams!]!) {{
  launchMultipleRuns(executionParamsList: $params) {{
    __typename
    ... on LaunchMultipleRunsResult {{ launchMultipleRunsResult {{ {LAUNCH_RESULT} }} }}
    ... on PythonError {{ message }}
  }}
}}"""

RUN_QUERY = (
    """
query OffloadRun($runId: ID!, $group: RunsFilter!) {
  runOrError(runId: $runId) { __typename ... on Run { ...OffloadRun } ... on Error { message } }
  runsOrError(filter: $group) {
    __typename ... on Runs { results { ...OffloadRun } } ... on Error { message }
  }
}"""
    + RUN_FIELDS
)

RUNS_QUERY = (
    """
query OffloadRuns($filter: RunsFilter!, $cursor: String, $limit: Int!) {
  runsOrError(filter: $filter, cursor: $cursor, limit: $limit) {
    __typename ... on Runs { results { ...OffloadRun } } ... on Error { message }
  }
}"""
    + RUN_FIELDS
)

EVENTS_QUERY = """
query OffloadEvents($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: 1000) {
    __typename
    ... on EventConnection {
      cursor hasMore
      events {
        __typename
        ... on ExecutionStepOutputEvent {
          stepKey
          metadataEntries {
            label
            ... on JsonMetadataEntry { jsonString }
            ... on TextMetadataEntry { text }
            ... on IntMetadataEntry { intValue }
            ... on FloatMetadataEntry { floatValue }
            ... on BoolMetadataEntry { boolValue }
            ... on UrlMetadataEntry { url }
            ... on PathMetadataEntry { path }
            ... on MarkdownMetadataEntry { mdStr }
          }
        }
        ... on ExecutionStepFailureEvent {
          stepKey message failureMetadata { description } error { ...OffloadError }
        }
        ... on RunFailureEvent { message error { ...OffloadError } }
      }
    }
    ... on Error { message }
  }
}
fragment OffloadError on PythonError { message className causes { message className } }"""

# SAFE_TERMINATE for a run that may be executing; MARK_AS_CANCELED_IMMEDIATELY for one that never started
# and never will on its own (DELAYED, or the attempt of a WAITING run that would resume it).
TERMINATE = """
mutation OffloadCancel($runId: String!, $policy: TerminateRunPolicy!) {
  terminateRun(runId: $runId, terminatePolicy: $policy) {
    __typename ... on Error { message } ... on TerminateRunFailure { message }
  }
}"""

# Queue limits changeable at run time are Dagster concurrency pools (offload/runtime/queues.py).
SET_LIMIT = """
mutation OffloadSetLimit($pool: String!, $limit: Int!) {
  setConcurrencyLimit(concurrencyKey: $pool, limit: $limit)
}"""
CLEAR_LIMIT = """
mutation OffloadClearLimit($pool: String!) { deleteConcurrencyLimit(concurrencyKey: $pool) }"""
