package io.marketpulse.flink.agent;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.InputStream;
import java.lang.instrument.ClassFileTransformer;
import java.lang.instrument.Instrumentation;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.ProtectionDomain;
import java.util.HexFormat;

/**
 * The TaskManager's Java agent (-javaagent:.deps/flink-ext/marketpulse-flink-ext.jar, env.java.opts.taskmanager
 * in conf/flink/config.yaml): when a job's class loader defines PyFlink's
 * org.apache.flink.streaming.api.runners.python.beam.PythonSharedResources, it gets MarketPulse's version
 * instead (flink-ext/src/patch/, stored in this jar under META-INF/marketpulse-patches/, where no class loader
 * looks for classes), whose close() does not turn Beam's "Reference count must not be negative" into a fatal
 * TaskManager error. Why, and why that is safe: see that class.
 *
 * <p>The class comes from the flink-python jar each PyFlink job ships, so it is loaded by the job's class
 * loader: replacing its bytes there keeps it in the same loader and package as BeamPythonFunctionRunner, which
 * a copy in lib/ could not (org.apache.flink.* is loaded parent-first, and the parent has no Beam classes).
 *
 * <p>Only the exact class of PyFlink 2.2.1 is replaced (SHA-256 of its bytes): after an upgrade the original is
 * kept, with a warning in the TaskManager log, rather than a stand-in written for another version.
 */
public final class PythonCloseGuardAgent {

    static final String TARGET = "org/apache/flink/streaming/api/runners/python/beam/PythonSharedResources";

    /** SHA-256 of TARGET's class file in flink-python-2.2.1.jar (apache-flink 2.2.1). */
    static final String ORIGINAL_SHA256 = "5859762a82c48f0a886086518daf5bf9e8ebf155c6bf03cd216e9e98557750fd";

    static final String PATCH_RESOURCE = "META-INF/marketpulse-patches/" + TARGET + ".class";

    private PythonCloseGuardAgent() {}

    public static void premain(String arguments, Instrumentation instrumentation) {
        // No logging here: the JVM has not run Flink's main yet. A missing patch must not stop the TaskManager.
        byte[] patch;
        try {
            patch = readPatch();
        } catch (IOException | RuntimeException e) {
            System.err.println("marketpulse agent: " + PATCH_RESOURCE + " unreadable, PyFlink left as is: " + e);
            return;
        }
        instrumentation.addTransformer(new Guard(patch), false);
    }

    static byte[] readPatch() throws IOException {
        try (InputStream in = PythonCloseGuardAgent.class.getClassLoader().getResourceAsStream(PATCH_RESOURCE)) {
            if (in == null) {
                throw new IOException("not in the agent jar");
            }
            return in.readAllBytes();
        }
    }

    static String sha256(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Hands out the patch for TARGET, once per class loader that defines it (one per job). */
    static final class Guard implements ClassFileTransformer {
        private final byte[] patch;

        Guard(byte[] patch) {
            this.patch = patch;
        }

        @Override
        public byte[] transform(ClassLoader loader, String className, Class<?> classBeingRedefined,
                                ProtectionDomain protectionDomain, byte[] classfileBuffer) {
            if (!TARGET.equals(className) || classBeingRedefined != null) {
                return null;
            }
            String found;
            try {
                found = sha256(classfileBuffer);
            } catch (RuntimeException e) {
                log(false, "{} left as is: {}", className, e.toString());
                return null;
            }
            if (!ORIGINAL_SHA256.equals(found)) {
                log(false, "{} is not PyFlink 2.2.1's (SHA-256 {}): left as is, so a Python operator's close "
                        + "can again end the TaskManager ('Reference count must not be negative'); update "
                        + "flink-ext/src/patch for this PyFlink", className, found);
                return null;
            }
            log(true, "{} replaced by MarketPulse's (its close() tolerates Beam's negative reference count of "
                    + "a Python worker a finishing bundle already closed) for class loader {}", className, loader);
            return patch.clone();
        }

        /** Logging must never decide whether the class is replaced (a transformer's exception is dropped). */
        private static void log(boolean info, String format, Object... arguments) {
            try {
                Logger log = LoggerFactory.getLogger(PythonCloseGuardAgent.class);
                if (info) {
                    log.info(format, arguments);
                } else {
                    log.warn(format, arguments);
                }
            } catch (Throwable e) {
                System.err.println("marketpulse agent: " + format + " " + java.util.Arrays.toString(arguments));
            }
        }
    }
}
