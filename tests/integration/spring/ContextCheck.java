import java.io.*;
import java.nio.charset.StandardCharsets;
import java.util.*;

/** Reads base64 Java-serialized contexts (one a line) and describes them with their Java
 * types; or writes the context a Spring Batch chunk step of the old service stores. */
public class ContextCheck {
    public static void main(String[] args) throws Exception {
        PrintStream out = new PrintStream(System.out, true, "UTF-8");
        if (args[0].equals("write")) {
            HashMap<String, Object> context = new HashMap<>();
            context.put("batch.taskletType", "org.springframework.batch.core.step.item.ChunkOrientedTasklet");
            context.put("batch.stepType", "org.springframework.batch.core.step.tasklet.TaskletStep");
            context.put("couponHistoryReader.read.count", Integer.valueOf(10));
            context.put("lastStore", "노량진동");
            context.put("total", Long.valueOf(1234567890123L));
            context.put("restarted", Boolean.TRUE);
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            try (ObjectOutputStream stream = new ObjectOutputStream(bytes)) {
                stream.writeObject(context);
            }
            out.println(Base64.getEncoder().encodeToString(bytes.toByteArray()));
            return;
        }
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line; (line = in.readLine()) != null; ) {
            byte[] data = Base64.getDecoder().decode(line);
            try (ObjectInputStream stream = new ObjectInputStream(new ByteArrayInputStream(data))) {
                out.println(describe(stream.readObject()));
            }
        }
    }

    static String describe(Object value) {
        StringBuilder text = new StringBuilder(value.getClass().getName());
        if (value instanceof Map<?, ?> map) {
            StringJoiner entries = new StringJoiner(", ", "{", "}");
            new TreeMap<Object, Object>(map).forEach((k, v) -> entries.add(k + "=" + describe(v)));
            return text.append(entries).toString();
        }
        if (value instanceof List<?> list) {
            StringJoiner items = new StringJoiner(", ", "[", "]");
            list.forEach(v -> items.add(describe(v)));
            return text.append(items).toString();
        }
        return text.append(':').append(value).toString();
    }
}
