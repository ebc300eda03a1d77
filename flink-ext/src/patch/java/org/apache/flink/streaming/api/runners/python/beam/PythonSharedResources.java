package org.apache.flink.streaming.api.runners.python.beam;

import org.apache.flink.python.env.PythonEnvironmentManager;

import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.runners.fnexecution.control.JobBundleFactory;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.List;

/**
 * MarketPulse's stand-in for PyFlink 2.2.1's class of the same name: the Python worker, its Beam job bundle
 * factory and the environment managers that all Python operators of one slot share (a lease on the slot's
 * managed memory, see BeamPythonFunctionRunner.open). Same package, constructor and methods as the original,
 * so BeamPythonFunctionRunner links to it unchanged; it is not on any class path: the 'marketpulse' Java agent
 * (io.marketpulse.flink.agent.PythonCloseGuardAgent, -javaagent in conf/flink/config.yaml) hands its bytes
 * to the job's class loader in place of the original's, and only if the original is byte for byte the one
 * of PyFlink 2.2.1.
 *
 * <p>The one change is close(), which the last lease runs when the last Python operator of the slot closes.
 * PyFlink finishes a bundle on a second thread (AbstractExternalPythonFunctionOperator.invokeFinishBundle
 * submits runner.flush() to its flushThreadPool while the task thread drains results). When the task is
 * cancelled or a downstream operator throws meanwhile, the task thread leaves that loop and closes the runner
 * while the flush thread is still in RemoteBundle.close(), holding one reference on the Python worker
 * (DefaultJobBundleFactory.WrappedSdkHarnessClient). DefaultJobBundleFactory.close() evicts the worker
 * ("Expiring environment ... with 1 remaining bundle references") and then drops its remaining references
 * itself ({@code while (client.unref() > 0)}); if the flush thread's own unref() lands between the two, the
 * count reaches 0 there (the flush thread closes the worker) and close() takes it to -1:
 * IllegalStateException "Reference count must not be negative." Thrown from a failed task's cleanup, Flink
 * 2.2 makes that fatal (Task.doRun: "FATAL - exception in exception handler of task"): the TaskManager exits.
 *
 * <p>A negative count only ever follows a count of 0, at which point the worker and its servers were closed,
 * and DefaultJobBundleFactory.close() collects the exception and finishes its own cleanup before throwing it.
 * So nothing is left to release: close() logs that one exception and carries on closing the environment
 * managers (which the original skips after any exception). Every other exception still propagates as before.
 */
public final class PythonSharedResources implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(PythonSharedResources.class);

    static final String NEGATIVE_REFERENCE_COUNT = "Reference count must not be negative.";

    private final JobBundleFactory jobBundleFactory;

    private final RunnerApi.Environment environment;

    private final List<PythonEnvironmentManager> environmentManagers = new ArrayList<>();

    PythonSharedResources(JobBundleFactory jobBundleFactory, RunnerApi.Environment environment) {
        this.jobBundleFactory = jobBundleFactory;
        this.environment = environment;
    }

    JobBundleFactory getJobBundleFactory() {
        return jobBundleFactory;
    }

    RunnerApi.Environment getEnvironment() {
        return environment;
    }

    synchronized void addPythonEnvironmentManager(PythonEnvironmentManager environmentManager) {
        environmentManagers.add(environmentManager);
    }

    @Override
    public void close() throws Exception {
        Exception failure = null;
        try {
            jobBundleFactory.close();
        } catch (Exception e) {
            if (onlyNegativeReferenceCounts(e)) {
                LOG.warn("Python worker of this slot closed by a bundle that finished while its operator was "
                        + "already closing (PyFlink's flush thread outlived a cancelled or failed task); "
                        + "ignoring Beam's '{}' from DefaultJobBundleFactory.close(): the worker and its "
                        + "servers are closed, nothing is left to release", NEGATIVE_REFERENCE_COUNT, e);
            } else {
                failure = e;
            }
        }
        List<PythonEnvironmentManager> managers;
        synchronized (this) {
            managers = new ArrayList<>(environmentManagers);
        }
        for (PythonEnvironmentManager manager : managers) {
            try {
                manager.close();
            } catch (Exception e) {
                if (failure == null) {
                    failure = e;
                } else {
                    failure.addSuppressed(e);
                }
            }
        }
        if (failure != null) {
            throw failure;
        }
    }

    /** The exception and everything it carries as suppressed are Beam's negative-reference-count check. */
    static boolean onlyNegativeReferenceCounts(Throwable error) {
        if (!(error instanceof IllegalStateException)
                || !NEGATIVE_REFERENCE_COUNT.equals(error.getMessage())
                || error.getCause() != null) {
            return false;
        }
        for (Throwable suppressed : error.getSuppressed()) {
            if (!onlyNegativeReferenceCounts(suppressed)) {
                return false;
            }
        }
        return true;
    }
}
