// Smallest real Flink job: proves a cluster started by ci/flink/cluster.sh
// accepts a job, schedules it on its TaskManager and writes files. It needs
// only flink-dist (no Beam), so it runs even where Beam's job-server jar is
// not available.
import org.apache.flink.api.common.RuntimeExecutionMode;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.core.fs.FileSystem;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

public class FlinkSmoke {
  public static void main(String[] args) throws Exception {
    String out = args[0];
    long n = args.length > 1 ? Long.parseLong(args[1]) : 1000L;
    StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
    env.setRuntimeMode(RuntimeExecutionMode.BATCH);
    env.fromSequence(1, n)
        .map(x -> x + "," + (x * x))
        .returns(Types.STRING)
        .writeAsText(out, FileSystem.WriteMode.OVERWRITE);
    env.execute("tfcascade-flink-smoke");
  }
}
