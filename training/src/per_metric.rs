//! Serde for per-metric arrays: `[T; 6]` indexed by [`Metric::index`] reads and writes as a map
//! keyed by metric name (`{"connections": .., "requests_nonidempotent": .., ...}`), so persisted
//! models and the admin API are readable. Deserializing requires every metric exactly once and
//! rejects unknown names.

use core::fmt;
use core::marker::PhantomData;

use serde::de::{Error, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::metric::Metric;

pub(crate) fn serialize<S, T>(values: &[T; Metric::COUNT], s: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    T: Serialize,
{
    let mut map = s.serialize_map(Some(Metric::COUNT))?;
    for m in Metric::ALL {
        map.serialize_entry(m.name(), &values[m.index()])?;
    }
    map.end()
}

pub(crate) fn deserialize<'de, D, T>(d: D) -> Result<[T; Metric::COUNT], D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_map(PerMetricVisitor(PhantomData))
}

struct PerMetricVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for PerMetricVisitor<T> {
    type Value = [T; Metric::COUNT];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map with one entry per metric")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut slots: [Option<T>; Metric::COUNT] = Default::default();
        while let Some(metric) = map.next_key::<Metric>()? {
            let slot = &mut slots[metric.index()];
            if slot.is_some() {
                return Err(A::Error::custom(format_args!(
                    "duplicate metric `{metric}`"
                )));
            }
            *slot = Some(map.next_value()?);
        }
        if let Some(m) = Metric::ALL.iter().find(|m| slots[m.index()].is_none()) {
            return Err(A::Error::missing_field(m.name()));
        }
        match slots {
            [Some(a), Some(b), Some(c), Some(d), Some(e), Some(f)] => Ok([a, b, c, d, e, f]),
            // Every slot was checked above.
            _ => Err(A::Error::custom("missing metric")),
        }
    }
}
