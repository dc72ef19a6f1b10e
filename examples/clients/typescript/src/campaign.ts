/**
 * An openrea campaign driven from TypeScript with the official Temporal SDK, written from
 * docs/api.md alone: start a campaign, wait for its plan, meet the documented refusals,
 * approve, list campaigns by search attribute, and read the verdict and the proposal.
 *
 * Every check prints one JSON line ({"check": ..., ...}); any surprise exits 1.
 * tests/e2e/test_typescript_client.py runs it against a dev server and a worker.
 *
 * Environment: TEMPORAL_ADDRESS (default localhost:7233), TEMPORAL_NAMESPACE (default),
 * CAMPAIGN (a workflow id prefix), APPROVER; for TLS: TEMPORAL_TLS_CA, TEMPORAL_TLS_CERT,
 * TEMPORAL_TLS_KEY (PEM files), TEMPORAL_API_KEY.
 */
import { readFileSync } from 'node:fs';
import {
  ApplicationFailure,
  Client,
  Connection,
  WorkflowFailedError,
  WorkflowHandle,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
} from '@temporalio/client';

// The documents this client reads (schema/*.json has them in full; only what we use here).
interface Hypothesis { id: string; title: string }
interface Plan { hypotheses: Hypothesis[] }
interface Approval { approver: string; approved_at: string; device_hours: number; preflight_override: string }
interface IgnoredSignal { signal: string; by: string; reason: string }
interface Comparison { gain: number; gain_low: number | null; gain_high: number | null; passed: boolean }
interface LaunchProposal {
  verdict: 'launch' | 'no launchable improvement';
  headline: string;
  candidate: string;
  changes: Record<string, unknown>;
  confirmation: Comparison | null;
  learned: string[];
}
interface CampaignStatus {
  campaign_id: string;
  phase: string;
  paused: boolean;
  plan: Plan | null;
  approval: Approval | null;
  device_hours_approved: number;
  device_hours_spent: number;
  ignored_signals: IgnoredSignal[];
  proposal: LaunchProposal | null;
}
interface ControlResult { phase: string; paused: boolean; stopping: boolean; message: string }
interface CampaignResult {
  status: CampaignStatus;
  best_model: Record<string, unknown> | null;
  improvement: number | null;
}

const address = process.env.TEMPORAL_ADDRESS ?? 'localhost:7233';
const namespace = process.env.TEMPORAL_NAMESPACE ?? 'default';
const prefix = process.env.CAMPAIGN ?? `ts-${Date.now()}`;
const approver = process.env.APPROVER ?? 'alice@example.com';
const TASK_QUEUE = 'rea-orchestration';

// A small campaign, so that it ends in seconds against fake activities.
const request = {
  goal: 'TypeScript client',
  approvers: [approver],
  budget: { device_hours: 40, max_parallel_trials: 4 },
  max_hypotheses: 2,
  exploitation_trials: 0,
  seeds: 2,
};

function report(check: string, details: Record<string, unknown> = {}): void {
  console.log(JSON.stringify({ check, ...details }));
}

function expect(condition: boolean, what: string, details: unknown = undefined): void {
  if (!condition) {
    throw new Error(`unexpected: ${what}${details === undefined ? '' : ` ${JSON.stringify(details)}`}`);
  }
}

async function connect(): Promise<Client> {
  const read = (name: string) => (process.env[name] ? readFileSync(process.env[name]!) : undefined);
  const ca = read('TEMPORAL_TLS_CA');
  const crt = read('TEMPORAL_TLS_CERT');
  const key = read('TEMPORAL_TLS_KEY');
  const apiKey = process.env.TEMPORAL_API_KEY;
  const tls = ca || crt ? { serverRootCACertificate: ca, clientCertPair: crt && key ? { crt, key } : undefined } : apiKey ? true : undefined;
  const connection = await Connection.connect({ address, tls, apiKey });
  return new Client({ connection, namespace });
}

/** The update's refusal: its type, asserted non-retryable and free of stack traces. */
async function refusal(handle: WorkflowHandle, update: string, args: unknown[]): Promise<ApplicationFailure> {
  try {
    // Sent as given, zero arguments included: the SDK's typing wants at least one.
    await handle.executeUpdate(update, { args: args as [unknown, ...unknown[]] });
  } catch (err) {
    expect(err instanceof WorkflowUpdateFailedError, `${update} failed with ${String(err)}`);
    const cause = (err as WorkflowUpdateFailedError).cause;
    expect(cause instanceof ApplicationFailure, `${update}'s cause`, String(cause));
    const failure = cause as ApplicationFailure;
    expect(failure.nonRetryable === true, `${update}: ${failure.type} is retryable`);
    expect(!failure.failure?.stackTrace, `${update}: a stack trace reached the client`, failure.failure?.stackTrace);
    expect(!/\.py\b|site-packages/.test(failure.message), `${update}: a server path`, failure.message);
    return failure;
  }
  throw new Error(`unexpected: ${update} ${JSON.stringify(args)} was accepted`);
}

async function refused(handle: WorkflowHandle, update: string, args: unknown[], type: string, word: string): Promise<void> {
  const failure = await refusal(handle, update, args);
  expect(failure.type === type && failure.message.includes(word), `${update} refused`, { type: failure.type, message: failure.message });
  report('refused', { update, type, message: failure.message });
}

async function status(handle: WorkflowHandle): Promise<CampaignStatus> {
  return handle.query<CampaignStatus>('status');
}

async function waitFor(handle: WorkflowHandle, done: (s: CampaignStatus) => boolean): Promise<CampaignStatus> {
  for (let i = 0; i < 600; i++) {
    const s = await status(handle);
    if (done(s)) return s;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error('unexpected: the campaign never got there');
}

async function start(client: Client, workflowId: string, args: unknown[] = [request]): Promise<WorkflowHandle> {
  return client.workflow.start('CampaignWorkflow', {
    taskQueue: TASK_QUEUE,
    workflowId,
    args,
    workflowIdReusePolicy: 'REJECT_DUPLICATE',
  });
}

/** A campaign from start to verdict, meeting every refusal on the way. */
async function wholeCampaign(client: Client): Promise<void> {
  const handle = await start(client, `${prefix}-main`);
  const planned = await waitFor(handle, (s) => s.phase !== 'planning');
  expect(planned.phase === 'awaiting_approval' && planned.plan !== null, 'the plan', planned.phase);
  report('plan', { phase: planned.phase, hypotheses: planned.plan!.hypotheses.map((h) => h.id) });

  // Malformed inputs, refused the same way whatever is wrong with them.
  await refused(handle, 'approve', [{ approver: 5 }], 'InvalidInput', 'approver');
  await refused(handle, 'approve', [{ approver, embeding_dim: 3 }], 'InvalidInput', 'embeding_dim');
  await refused(handle, 'approve', [], 'InvalidInput', 'one argument');
  await refused(handle, 'stop', [{ reason: 'who am I?' }], 'InvalidInput', 'by');
  // Refusals of a well-formed request, each with its documented type.
  await refused(handle, 'approve', [{ approver: 'mallory@example.com' }], 'NotAnApprover', 'mallory');
  await refused(handle, 'stop', [{ by: 'mallory@example.com' }], 'NotAnApprover', 'may not stop');
  await refused(handle, 'revise_plan', [{ approver, drop: ['no-such-hypothesis'] }], 'UnknownHypothesis', 'no-such-hypothesis');
  const every = planned.plan!.hypotheses.map((h) => h.id);
  const all = [...every, ...((planned.plan as Plan & { held_back?: Hypothesis[] }).held_back ?? []).map((h) => h.id)];
  await refused(handle, 'revise_plan', [{ approver, drop: all }], 'EmptyPlan', 'every hypothesis');
  await refused(handle, 'extend_budget', [{ approver, device_hours: 5 }], 'NotApproved', 'not approved');
  await refused(handle, 'resume', [{ by: approver }], 'NotPaused', 'not paused');
  await refused(handle, 'resolve_trial', [{ approver, trial_id: 'nope', action: 'skip' }], 'NotEscalated', 'nope');

  // A malformed signal cannot answer: it is ignored, and the status says why.
  await handle.signal('stop', { by: 5 });
  const ignored = await waitFor(handle, (s) => s.ignored_signals.length > 0);
  expect(ignored.phase === 'awaiting_approval', 'the malformed stop was ignored', ignored.phase);
  report('ignored signal', { reason: ignored.ignored_signals[0].reason });

  // pause, then approve: nothing runs until resume.
  const paused = await handle.executeUpdate<ControlResult, [unknown]>('pause', { args: [{ by: approver, reason: 'read the plan first' }] });
  expect(paused.paused, 'paused');
  await refused(handle, 'pause', [{ by: approver }], 'AlreadyPaused', 'already paused');
  const approval = await handle.executeUpdate<Approval, [unknown]>('approve', { args: [{ approver, comment: 'from TypeScript' }] });
  expect(approval.approver === approver && approval.device_hours === 40, 'the approval', approval);
  report('approved', { ...approval });
  // Approving again is idempotent; other hours are refused.
  const again = await handle.executeUpdate<Approval, [unknown]>('approve', { args: [{ approver }] });
  expect(again.approved_at === approval.approved_at, 'approve is idempotent');
  await refused(handle, 'approve', [{ approver, device_hours: 7 }], 'AlreadyApproved', 'extend_budget');
  await refused(handle, 'recheck_preflight', [{}], 'NothingToCheck', 'no preflight');
  await handle.executeUpdate('resume', { args: [{ by: approver }] });

  // Campaigns by search attribute (eventually consistent: retry a little).
  let listed: string[] = [];
  for (let i = 0; i < 60 && listed.length === 0; i++) {
    listed = [];
    for await (const wf of client.workflow.list({ query: `WorkflowId = '${handle.workflowId}' AND ReaDeviceHoursApproved > 0` })) {
      listed.push(`${wf.workflowId}:${String(wf.searchAttributes?.ReaPhase ?? '')}`);
    }
    if (listed.length === 0) await new Promise((resolve) => setTimeout(resolve, 250));
  }
  expect(listed.length === 1, 'listed by ReaDeviceHoursApproved', listed);
  report('listed', { campaigns: listed });

  // The result: verdict, headline, changes; best_model and improvement only on launch.
  const result = await handle.result() as CampaignResult;
  const proposal = result.status.proposal;
  expect(proposal !== null, 'a proposal');
  const launch = proposal!.verdict === 'launch';
  expect((result.best_model !== null) === launch && (result.improvement !== null) === launch, 'best_model and improvement follow the verdict', result.improvement);
  expect(result.status.device_hours_spent > 0 && result.status.device_hours_approved === 40, 'the ledger');
  report('result', {
    phase: result.status.phase,
    verdict: proposal!.verdict,
    headline: proposal!.headline,
    changes: proposal!.changes,
    gain: proposal!.confirmation?.gain ?? null,
    improvement: result.improvement,
  });

  // An update to a campaign that has ended: the SDK says the workflow is not found.
  try {
    await handle.executeUpdate('pause', { args: [{ by: approver }] });
    throw new Error('unexpected: an update to an ended campaign was accepted');
  } catch (err) {
    expect(err instanceof WorkflowNotFoundError, 'an ended campaign', String(err));
    report('ended', { error: (err as Error).name });
  }
  // The id of an ended campaign is not reused silently.
  try {
    await start(client, handle.workflowId);
    throw new Error('unexpected: the id was reused');
  } catch (err) {
    expect((err as Error).name === 'WorkflowExecutionAlreadyStartedError', 'id reuse refused', String(err));
    report('id reuse refused', {});
  }
}

/** A stopped campaign still answers with its result; a malformed request fails at once. */
async function stopsAndFailures(client: Client): Promise<void> {
  const handle = await start(client, `${prefix}-stopped`);
  await waitFor(handle, (s) => s.phase === 'awaiting_approval');
  const stopped = await handle.executeUpdate<ControlResult, [unknown]>('stop', { args: [{ by: approver, reason: 'enough' }] });
  expect(stopped.stopping, 'stopping');
  const result = await handle.result() as CampaignResult;
  expect(result.status.phase === 'stopped' && result.best_model === null, 'stopped', result.status.phase);
  report('stopped', { phase: result.status.phase, verdict: result.status.proposal?.verdict ?? null });

  const bad = await start(client, `${prefix}-bad`, [{ goal: 'typo', seeds: 'three', metrc: 'ne' }]);
  try {
    await bad.result();
    throw new Error('unexpected: a malformed request ran');
  } catch (err) {
    expect(err instanceof WorkflowFailedError, 'failed', String(err));
    const cause = (err as WorkflowFailedError).cause;
    expect(cause instanceof ApplicationFailure && cause.type === 'InvalidRequest', 'InvalidRequest', String(cause));
    expect(cause!.message.includes('metrc: Extra inputs are not permitted'), 'names the field', cause!.message);
    expect(!(cause as ApplicationFailure).failure?.stackTrace, 'no stack trace');
    report('refused', { update: '(start)', type: 'InvalidRequest', message: cause!.message });
  }
}

async function main(): Promise<void> {
  const client = await connect();
  await wholeCampaign(client);
  await stopsAndFailures(client);
  report('done');
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
