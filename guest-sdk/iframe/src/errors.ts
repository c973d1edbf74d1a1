/**
 * Typed errors mirroring the WIT `error` variant. Every gateway error is an RFC 9457 problem
 * document whose `code` is the WIT case; `errorFromProblem` turns it into one of these classes.
 */

/** A problem document as the gateway sends it. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  code: string;
  detail: string;
  [field: string]: unknown;
}

/** Base class of every error from the SDK. `code` is the stable WIT code. */
export class StorageError extends Error {
  /** The stable code (`revision-conflict`, `quota-exceeded`, …). */
  readonly code: string;
  /** The HTTP status, 0 when the request never got an answer. */
  readonly status: number;
  /** Bulk put: the failing item's index; `null` otherwise. */
  readonly item: number | null;
  /** Whether retrying the same call may succeed. */
  readonly retryable: boolean;
  /** The problem document, when there was one. */
  readonly problem: Problem | undefined;

  constructor(code: string, message: string, status: number, problem?: Problem) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.problem = problem;
    this.item = typeof problem?.["item"] === "number" ? (problem["item"] as number) : null;
    this.retryable = code === "unavailable";
  }
}

/** No valid session token (REST only: components have no tokens). */
export class UnauthenticatedError extends StorageError {}
/** The install may not use storage, or the session is read-only and tried to write. */
export class CapabilityDeniedError extends StorageError {}
/** The record (or schema) does not exist. */
export class NotFoundError extends StorageError {}

/** A precondition failed; `currentRevision` is the key's revision now (`null` when absent). */
export class RevisionConflictError extends StorageError {
  readonly key: string;
  readonly currentRevision: number | null;
  constructor(message: string, status: number, problem: Problem) {
    super("revision-conflict", message, status, problem);
    this.key = String(problem["key"] ?? "");
    this.currentRevision = (problem["currentRevision"] as number | null) ?? null;
  }
}

/** A quota would be exceeded. */
export class QuotaExceededError extends StorageError {
  readonly quota: string;
  readonly limit: number;
  readonly usage: number;
  constructor(message: string, status: number, problem: Problem) {
    super("quota-exceeded", message, status, problem);
    this.quota = String(problem["quota"]);
    this.limit = Number(problem["limit"]);
    this.usage = Number(problem["usage"]);
  }
}

/** One JSON Schema violation. */
export interface Violation {
  instancePath: string;
  keyword: string;
  message: string;
}

/** The value does not satisfy the namespace's schema. */
export class ValidationFailedError extends StorageError {
  readonly violations: Violation[];
  constructor(message: string, status: number, problem: Problem) {
    super("validation-failed", message, status, problem);
    this.violations = (problem["violations"] as Violation[] | undefined) ?? [];
  }
}

/** The writer pinned a schema version that is not current. */
export class SchemaMismatchError extends StorageError {
  readonly expected: number;
  readonly current: number | null;
  constructor(message: string, status: number, problem: Problem) {
    super("schema-mismatch", message, status, problem);
    this.expected = Number(problem["expected"]);
    this.current = (problem["current"] as number | null) ?? null;
  }
}

/** An argument is malformed or out of limits; `field` names it. */
export class InvalidInputError extends StorageError {
  readonly field: string;
  constructor(message: string, status: number, problem?: Problem, field?: string) {
    super("invalid-input", message, status, problem);
    this.field = field ?? String(problem?.["field"] ?? "");
  }
}

/**
 * Storage is temporarily unreachable; retrying may succeed. With `status` 0 the gateway never
 * answered, so a write may or may not have been applied: retry it with a precondition.
 */
export class UnavailableError extends StorageError {}
/**
 * No such route or method at the gateway (REST only): usually a `baseUrl` that is not the API
 * base, never an absent record.
 */
export class NoRouteError extends StorageError {}
/** An unexpected failure in the host. */
export class InternalError extends StorageError {}

/** The typed error of a problem document. */
export function errorFromProblem(problem: Problem, status: number): StorageError {
  const message = problem.detail || problem.title;
  switch (problem.code) {
    case "unauthenticated":
      return new UnauthenticatedError(problem.code, message, status, problem);
    case "capability-denied":
      return new CapabilityDeniedError(problem.code, message, status, problem);
    case "not-found":
      return new NotFoundError(problem.code, message, status, problem);
    case "revision-conflict":
      return new RevisionConflictError(message, status, problem);
    case "quota-exceeded":
      return new QuotaExceededError(message, status, problem);
    case "validation-failed":
      return new ValidationFailedError(message, status, problem);
    case "schema-mismatch":
      return new SchemaMismatchError(message, status, problem);
    case "invalid-input":
      return new InvalidInputError(message, status, problem);
    case "unavailable":
      return new UnavailableError(problem.code, message, status, problem);
    case "no-route":
      return new NoRouteError(problem.code, message, status, problem);
    default:
      return new InternalError(problem.code || "internal", message, status, problem);
  }
}
